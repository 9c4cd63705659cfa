"""What the engine's lab tests do to and read from the real guests and storage."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
from pathlib import Path
from typing import Any
from xml.sax.saxutils import quoteattr

import libvirt
import rados
import rbd

from agent.config import AgentConfig
from hostsnap_lab import guest_agent
from hostsnap_lab.ceph import MON_ADDR
from hostsnap_lab.lab import Lab, wait_for_guest_agents
from hostsnap_lab.paths import LabPaths


def write_marker(dom: libvirt.virDomain, name: str) -> None:
    guest_agent.exec_in_guest(dom, ["/bin/sh", "-c", f"echo {name} > /data/{name} && sync"])


def has_marker(dom: libvirt.virDomain, name: str) -> bool:
    out = guest_agent.exec_in_guest(
        dom, ["/bin/sh", "-c", f"test -f /data/{name} && echo yes || echo no"]
    )
    return out.strip() == "yes"


def stop(dom: libvirt.virDomain) -> None:
    if dom.isActive():
        dom.destroy()


def start(dom: libvirt.virDomain, timeout: float = 180) -> None:
    """Starts the domain and waits until its guest agent answers."""
    dom.create()
    wait_for_agent(dom, timeout)


def wait_for_agent(dom: libvirt.virDomain, timeout: float = 180) -> None:
    wait_for_guest_agents(dom.connect(), LabPaths.from_env(), (dom.name(),), timeout)


def disk_source(dom: libvirt.virDomain, inactive: bool = False) -> str:
    from agent.hypervisor.domain_xml import volumes

    flags = libvirt.VIR_DOMAIN_XML_INACTIVE if inactive else 0
    path = volumes(dom.name(), dom.XMLDesc(flags))[0].path
    assert path is not None
    return path


def chain(path: str) -> list[str]:
    out = subprocess.run(
        ["qemu-img", "info", "--backing-chain", "-U", "--output=json", path],
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return [layer["filename"] for layer in json.loads(out)]


def sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while block := f.read(1 << 20):
            digest.update(block)
    return digest.hexdigest()


def rbd_snapshots(lab: Lab, image: str = "lab-rbd") -> list[str]:
    with (
        rados.Rados(conffile=str(lab.ceph_conf)) as cluster,
        cluster.open_ioctx("rbd") as io,
        rbd.Image(io, image) as img,
    ):
        return [s["name"] for s in img.list_snaps()]


def storage_state(lab: Lab, conn: libvirt.virConnect) -> dict[str, Any]:
    """Everything a failed request must leave as it was. The running guests keep writing to
    their active images, so those are named, not hashed; every other file is hashed."""
    qcow2 = conn.lookupByName("lab-qcow2")
    active = disk_source(qcow2) if qcow2.isActive() else None
    return {
        "pool": {
            p.name: ("active" if str(p) == active else sha256(p))
            for p in sorted(lab.paths.pool.iterdir())
        },
        "qcow2_chain": chain(disk_source(qcow2)),
        "qcow2_definition": disk_source(qcow2, inactive=True),
        "rbd_snapshots": rbd_snapshots(lab),
        "layers": (lab.agent_state / "layers.json").read_text()
        if (lab.agent_state / "layers.json").exists()
        else None,
    }


def run_agent_process(
    config: AgentConfig, code: str, fault: str
) -> subprocess.CompletedProcess[str]:
    """Runs engine code in a separate agent process with the fault switch set."""
    script = (
        "from pathlib import Path\n"
        "from agent.config import AgentConfig\n"
        "from agent.wiring import open_services\n"
        f"svc = open_services(AgentConfig(state_dir=Path({str(config.state_dir)!r}), "
        f"ceph_conf={config.ceph_conf!r}, "
        f"backup_targets_dir=Path({str(config.backup_targets_dir)!r})))\n" + code
    )
    return subprocess.run(
        [sys.executable, "-c", script],
        capture_output=True,
        text=True,
        timeout=300,
        env={"HOSTSNAP_FAULT": fault, "PATH": "/usr/sbin:/usr/bin:/sbin:/bin"},
        check=False,
    )


def qcow2_and_rbd_disks(lab: Lab, qcow2: Path, rbd_image: str) -> str:
    """Disk XML for a lab domain: vda a qcow2 file (the guest's /data), vdb an RBD image."""
    host, port = MON_ADDR.split(":")
    return f"""<disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(qcow2))}/>
      <target dev='vda' bus='virtio'/>
    </disk>
    <disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name={quoteattr(f"rbd/{rbd_image}")}>
        <host name='{host}' port='{port}'/>
        <config file={quoteattr(str(lab.ceph_conf))}/>
      </source>
      <target dev='vdb' bus='virtio'/>
    </disk>"""
