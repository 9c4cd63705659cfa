"""The two lab domains: TCG guests with a guest-agent channel, one disk each.

`lab-qcow2` has a qcow2 disk in the file pool directory; `lab-rbd` has its disk on RBD.
"""

from __future__ import annotations

import logging
import xml.etree.ElementTree as ET
from dataclasses import dataclass
from xml.sax.saxutils import quoteattr

import libvirt

from .ceph import MON_ADDR
from .paths import QCOW2_DOMAIN, RBD_DOMAIN, RBD_POOL, LabPaths

log = logging.getLogger(__name__)

MEMORY_MIB = 256


@dataclass(frozen=True)
class LabDomain:
    name: str
    disk_xml: str


def qcow2_domain(paths: LabPaths) -> LabDomain:
    disk = f"""<disk type='file' device='disk'>
      <driver name='qemu' type='qcow2'/>
      <source file={quoteattr(str(paths.qcow2_disk))}/>
      <target dev='vda' bus='virtio'/>
    </disk>"""
    return LabDomain(QCOW2_DOMAIN, disk)


def rbd_domain(paths: LabPaths) -> LabDomain:
    host, port = MON_ADDR.split(":")
    disk = f"""<disk type='network' device='disk'>
      <driver name='qemu' type='raw'/>
      <source protocol='rbd' name={quoteattr(f"{RBD_POOL}/{RBD_DOMAIN}")}>
        <host name='{host}' port='{port}'/>
        <config file={quoteattr(str(paths.ceph_conf))}/>
      </source>
      <target dev='vda' bus='virtio'/>
    </disk>"""
    return LabDomain(RBD_DOMAIN, disk)


def domain_xml(paths: LabPaths, domain: LabDomain) -> str:
    # type='qemu' (TCG): nested KVM is unusable on these machines (real-stack.md).
    # on_reboot=destroy: a guest that panics stops visibly instead of rebooting in a loop.
    return f"""<domain type='qemu'>
  <name>{domain.name}</name>
  <memory unit='MiB'>{MEMORY_MIB}</memory>
  <vcpu>1</vcpu>
  <os>
    <type arch='x86_64'>hvm</type>
    <kernel>{paths.kernel}</kernel>
    <initrd>{paths.initramfs}</initrd>
    <cmdline>console=ttyS0 panic=-1</cmdline>
  </os>
  <clock offset='utc'/>
  <on_poweroff>destroy</on_poweroff>
  <on_reboot>destroy</on_reboot>
  <on_crash>destroy</on_crash>
  <devices>
    {domain.disk_xml}
    <controller type='virtio-serial' index='0'/>
    <channel type='unix'>
      <source mode='bind'/>
      <target type='virtio' name='org.qemu.guest_agent.0'/>
    </channel>
    <serial type='file'>
      <source path={quoteattr(str(paths.console_log(domain.name)))}/>
      <target port='0'/>
    </serial>
    <memballoon model='none'/>
  </devices>
</domain>
"""


def lookup(conn: libvirt.virConnect, name: str) -> libvirt.virDomain | None:
    try:
        return conn.lookupByName(name)
    except libvirt.libvirtError as e:
        if e.get_error_code() == libvirt.VIR_ERR_NO_DOMAIN:
            return None
        raise


def is_running_from(conn: libvirt.virConnect, name: str, paths: LabPaths) -> bool:
    """True when the domain runs with this lab's files (not those of another state dir)."""
    dom = lookup(conn, name)
    return dom is not None and dom.isActive() == 1 and str(paths.kernel) in dom.XMLDesc()


def disk_source(dom: libvirt.virDomain) -> str:
    """The first disk's active image: a file path, or rbd:pool/image."""
    source = ET.fromstring(dom.XMLDesc()).find("devices/disk/source")
    if source is None:
        return "(no disk)"
    return source.get("file") or f"rbd:{source.get('name')}"


def remove(conn: libvirt.virConnect, name: str) -> None:
    """Destroys and undefines the domain if it exists, with any snapshot metadata."""
    dom = lookup(conn, name)
    if dom is None:
        return
    log.info("removing domain %s", name)
    if dom.isActive():
        dom.destroy()
    dom.undefineFlags(
        libvirt.VIR_DOMAIN_UNDEFINE_SNAPSHOTS_METADATA
        | libvirt.VIR_DOMAIN_UNDEFINE_CHECKPOINTS_METADATA
    )


def define_and_start(conn: libvirt.virConnect, paths: LabPaths, domain: LabDomain) -> None:
    log.info("defining and starting domain %s", domain.name)
    paths.logs.mkdir(parents=True, exist_ok=True)
    paths.console_log(domain.name).unlink(missing_ok=True)
    conn.defineXML(domain_xml(paths, domain)).create()
