"""A libvirt host with QEMU behind it, in memory, over real image files: the Host port
(agent/hypervisor/ports.py) as libvirt answers it for the operations hostsnap makes.

Each domain keeps its persistent definition and, while it runs, its live XML, started from
XML recorded from the lab (tests/unit/data/). What the calls do:

- `snapshot_external` switches each named disk to its pre-made overlay (REUSE_EXT), the old
  source becoming the first `<backingStore>` of the chain, live and in the definition.
- `block_commit` / `block_pull` start a block job that moves `cur` towards `end` over polls of
  `block_job`. A commit below the active image and a pull end by themselves (the files are
  changed with the real qemu-img then, as QEMU would); an active commit is then `ready`
  (its mirror marked so in the live XML) until `block_job_pivot` (the disk is on the base,
  live and in the definition) or `block_job_abort` (the chain as it was).
- `suspend` / `resume` / `stop` change the state; a frozen guest is thawed by nothing here.

RBD images are FakeRbd's. A disk on a temporary overlay over RBD (the short freeze) keeps what
the guest writes into the overlay (really written, and remembered) until the overlay is
committed into the image."""

from __future__ import annotations

import copy
import itertools
import os
import xml.etree.ElementTree as ET
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.errors import Conflict, NotFound, OperationFailed, Precondition
from agent.hypervisor import qemu_img
from agent.model import DomainState
from tests.unit.engine import images
from tests.unit.engine.rbd import FakeRbd
from tests.unit.fakes import FakeGuest

SHUTOFF_SHUTDOWN = 1  # libvirt.VIR_DOMAIN_SHUTOFF_SHUTDOWN: a clean shutdown
SHUTOFF_DESTROYED = 2
JOB_TYPES = {"pull": 1, "commit": 3, "active-commit": 4}  # libvirt's VIR_DOMAIN_BLOCK_JOB_TYPE_*
LIVE = (DomainState.RUNNING, DomainState.PAUSED)


@dataclass
class BlockJob:
    kind: str  # "commit", "active-commit" or "pull"
    top: str  # the image committed (pull: the active image)
    base: ET.Element | None  # the chain node committed into (None for a pull)
    polls: int
    end: int = images.SIZE
    cur: int = 0
    bandwidth: int = 0
    ready: bool = False


@dataclass
class FakeDomain:
    name: str
    uuid: str
    definition: str
    live: str | None
    state: DomainState
    reason: int = 1
    guest: FakeGuest = field(default_factory=FakeGuest)
    jobs: dict[str, BlockJob] = field(default_factory=dict)


class FakeHost:
    def __init__(self, rbd: FakeRbd, job_polls: int = 3) -> None:
        self.rbd = rbd
        self.job_polls = job_polls
        self.domains: dict[str, FakeDomain] = {}
        self.calls: list[str] = []
        # What the guest wrote into a temporary overlay over RBD: overlay -> {offset: marker}.
        self.overlay_writes: dict[str, dict[int, int]] = {}

    # -- setting up and looking in (not part of the port)

    def add(self, live_template: str, definition: str, running: bool = True) -> FakeDomain:
        root = ET.fromstring(definition)
        name, uuid = root.findtext("name", ""), root.findtext("uuid", "")
        dom = FakeDomain(name, uuid, definition, None, DomainState.SHUTOFF, SHUTOFF_SHUTDOWN)
        self.domains[name] = dom
        if running:
            self.start(name, live_template)
        return dom

    def start(self, name: str, live_template: str | None = None) -> None:
        """Boots the domain from its definition; libvirt reads each file disk's chain."""
        dom = self._domain(name)
        assert dom.state == DomainState.SHUTOFF, dom.state
        root = ET.fromstring(live_template or dom.definition)
        defined = ET.fromstring(dom.definition)
        devices = root.find("devices")
        assert devices is not None
        for disk in _disks(root):
            target = _target(disk)
            new = copy.deepcopy(_disk(defined, target))
            for stale in new.findall("backingStore"):
                new.remove(stale)
            source = new.find("source")
            if new.get("type") == "file" and source is not None:
                _insert_after(new, source, self._probed_chain(source.get("file", "")))
            for alias in disk.findall("alias"):
                new.append(copy.deepcopy(alias))
            devices[list(devices).index(disk)] = new
        dom.live = ET.tostring(root, encoding="unicode")
        dom.state, dom.reason = DomainState.RUNNING, 1

    def _probed_chain(self, path: str) -> ET.Element:
        """The `<backingStore>` libvirt reports for a file image, from the images."""
        top = terminator = ET.Element("backingStore")
        backing = qemu_img.backing_file(path)
        node = top
        while backing is not None:
            node.set("type", "file")
            ET.SubElement(node, "format", type=qemu_img.info(backing).format)
            ET.SubElement(node, "source", file=backing)
            terminator = ET.SubElement(node, "backingStore")
            node, backing = terminator, qemu_img.backing_file(backing)
        return top

    def guest(self, name: str) -> FakeGuest:
        """The domain's qemu-guest-agent (the GuestAgents port)."""
        return self._domain(name).guest

    def source(self, name: str, target: str, *, inactive: bool = False) -> str:
        """Where the disk is, live or defined: "file:<path>" or "rbd:<pool/image>"."""
        disk = _disk(ET.fromstring(self.xml(name, inactive=inactive)), target)
        return _where(disk)

    def write(self, name: str, target: str, marker: int) -> None:
        """The guest writes a marker into the disk, through its active image."""
        dom = self._domain(name)
        assert dom.state == DomainState.RUNNING, f"{name} is {dom.state}: its guest cannot write"
        assert not dom.guest.frozen, f"{name} is frozen: its guest's writes would block"
        assert dom.live is not None
        disk = _disk(ET.fromstring(dom.live), target)
        if disk.get("type") == "network":
            self.rbd.images[_rbd_name(disk)].data[marker] = marker
            return
        path = _file(disk)
        if any(n.get("type") == "network" for n in _nodes(disk)):
            images.write(images.without_backing(path), marker)
            self.overlay_writes.setdefault(path, {})[marker] = marker
            return
        images.write(path, marker, _format(disk))

    def reads(self, name: str, target: str, marker: int) -> bool:
        """Whether the disk, as the domain runs or would boot now, reads the marker."""
        dom = self._domain(name)
        disk = _disk(ET.fromstring(dom.definition if dom.live is None else dom.live), target)
        if disk.get("type") == "network":
            return self.rbd.images[_rbd_name(disk)].data.get(marker) == marker
        path = _file(disk)
        backing = qemu_img.backing_file(path)
        if backing is not None and backing.startswith("rbd:"):
            if self.overlay_writes.get(path, {}).get(marker) == marker:
                return True
            spec = backing.removeprefix("rbd:").split(":")[0]
            return self.rbd.images[spec].data.get(marker) == marker
        return images.reads(path, marker, _format(disk))

    # -- the Host port

    def versions(self) -> tuple[str, str]:
        return "9.0.0", "7.2.0"

    def list_domains(self, include_inactive: bool) -> list[tuple[str, str, DomainState]]:
        return sorted(
            (d.name, d.uuid, d.state)
            for d in self.domains.values()
            if include_inactive or d.state in LIVE
        )

    def block_counters(self) -> tuple[float, dict[str, dict[str, dict[str, int]]]]:
        return 0.0, {d.name: {} for d in self.domains.values() if d.state in LIVE}

    def exists(self, name: str) -> bool:
        return name in self.domains

    def state(self, name: str) -> tuple[DomainState, int]:
        dom = self._domain(name)
        return dom.state, dom.reason

    def shut_off_cleanly(self, name: str) -> bool:
        dom = self._domain(name)
        return dom.state == DomainState.SHUTOFF and dom.reason == SHUTOFF_SHUTDOWN

    def xml(self, name: str, *, inactive: bool = False) -> str:
        dom = self._domain(name)
        if inactive or dom.live is None:
            return dom.definition
        return dom.live

    def define(self, xml: str) -> None:
        self.calls.append("define")
        root = ET.fromstring(xml)
        dom = self._domain(root.findtext("name", ""))
        for disk in _disks(root):  # libvirt refuses a definition naming a missing image
            source = disk.find("source")
            if disk.get("type") == "file" and source is not None:
                path = source.get("file", "")
                if not os.path.exists(path):
                    raise OperationFailed(f"defining a domain: cannot access {path}")
        dom.definition = xml

    def stop(self, name: str, timeout: float) -> bool:
        self.calls.append(f"stop({name})")
        dom = self._domain(name)
        if dom.state in LIVE:
            dom.state, dom.reason, dom.live = DomainState.SHUTOFF, SHUTOFF_SHUTDOWN, None
            dom.jobs.clear()
            dom.guest.frozen = False
        return True

    def suspend(self, name: str) -> None:
        self.calls.append(f"suspend({name})")
        dom = self._live(name)
        if dom.state != DomainState.RUNNING:
            raise Precondition(f"suspending {name!r}: domain is not running")
        dom.state, dom.reason = DomainState.PAUSED, 1

    def resume(self, name: str) -> None:
        self.calls.append(f"resume({name})")
        dom = self._live(name)
        if dom.state != DomainState.PAUSED:
            raise Precondition(f"resuming {name!r}: domain is not paused")
        dom.state, dom.reason = DomainState.RUNNING, 1

    def snapshot_external(self, name: str, overlays: dict[str, str], targets: list[str]) -> None:
        self.calls.append(f"snapshot_external({name}, {sorted(overlays)})")
        dom = self._live(name)
        assert dom.live is not None
        live, defined = ET.fromstring(dom.live), ET.fromstring(dom.definition)
        for disk in live.findall("devices/disk"):
            if _target(disk) not in targets:  # libvirt would apply its default mode to it
                raise OperationFailed(f"external snapshot of {name!r}: {_target(disk)} not named")
        for target, overlay in overlays.items():
            if not os.path.exists(overlay):  # REUSE_EXT: the overlay must be there
                raise OperationFailed(f"external snapshot of {name!r}: no file {overlay}")
            if target in dom.jobs:
                raise Conflict(f"external snapshot of {name!r}: {target} has a block job")
        for target, overlay in overlays.items():
            _switch_to_overlay(_disk(live, target), overlay, terminate=True)
            _switch_to_overlay(_disk(defined, target), overlay, terminate=False)
        dom.live = ET.tostring(live, encoding="unicode")
        dom.definition = ET.tostring(defined, encoding="unicode")

    def block_job(self, name: str, target: str) -> dict[str, int] | None:
        dom = self._live(name)
        job = dom.jobs.get(target)
        if job is None:
            return None
        if job.kind != "active-commit" and job.cur >= job.end:
            self._complete(dom, target, job)
            return None
        job.cur = min(job.end, job.cur + job.end // job.polls)
        if job.kind == "active-commit" and job.cur == job.end and not job.ready:
            self._commit_data(dom, target, job)
            job.ready = True
            self._edit_live(dom, target, lambda disk: _mirror(disk).set("ready", "yes"))
        return {
            "type": JOB_TYPES[job.kind],
            "cur": job.cur,
            "end": job.end,
            "bandwidth": job.bandwidth,
        }

    def block_commit(
        self,
        name: str,
        target: str,
        top: str | None,
        base: str | None,
        *,
        active: bool,
        bandwidth_mib: int = 0,
    ) -> None:
        self.calls.append(f"block_commit({name}, {target}, {top}, {base}, active={active})")
        dom = self._live(name)
        if target in dom.jobs:
            raise Conflict(f"block commit on {name}/{target}: disk already in a block job")
        assert dom.live is not None
        disk = _disk(ET.fromstring(dom.live), target)
        nodes = _nodes(disk)
        paths = [_file(n) if n.get("type") == "file" else None for n in nodes]
        top_index = 0 if top is None else _index(paths, top, f"{top} is not in the chain")
        if (top_index == 0) != active:
            raise Precondition(f"block commit on {name}/{target}: ACTIVE flag and top disagree")
        if base is None:
            base_index = len(nodes) - 1
        else:
            base_index = _index(paths, base, f"{base} is not in the chain")
        if base_index <= top_index:
            raise OperationFailed(f"block commit on {name}/{target}: {base} is not below the top")
        top_path = paths[top_index]
        assert top_path is not None
        kind = "active-commit" if active else "commit"
        job = BlockJob(kind, top_path, nodes[base_index], self.job_polls, bandwidth=bandwidth_mib)
        dom.jobs[target] = job
        if active:
            base_node = nodes[base_index]

            def add_mirror(live_disk: ET.Element) -> None:
                mirror = ET.SubElement(
                    live_disk, "mirror", type=base_node.get("type", "file"), job=kind, ready="no"
                )
                for child in base_node:
                    if child.tag in ("format", "source"):
                        mirror.append(copy.deepcopy(child))

            self._edit_live(dom, target, add_mirror)

    def block_pull(self, name: str, target: str, *, bandwidth_mib: int = 0) -> None:
        self.calls.append(f"block_pull({name}, {target})")
        dom = self._live(name)
        if target in dom.jobs:
            raise Conflict(f"block pull on {name}/{target}: disk already in a block job")
        assert dom.live is not None
        top = _file(_disk(ET.fromstring(dom.live), target))
        dom.jobs[target] = BlockJob("pull", top, None, self.job_polls, bandwidth=bandwidth_mib)

    def block_job_set_speed(self, name: str, target: str, bandwidth_mib: int) -> None:
        job = self._live(name).jobs.get(target)
        if job is None:
            raise OperationFailed(f"block job speed on {name}/{target}: no job")
        job.bandwidth = bandwidth_mib

    def block_job_pivot(self, name: str, target: str) -> None:
        self.calls.append(f"block_job_pivot({name}, {target})")
        dom = self._live(name)
        job = dom.jobs.get(target)
        if job is None or job.kind != "active-commit" or not job.ready:
            raise Precondition(f"pivot on {name}/{target}: no block job ready to pivot")
        assert job.base is not None
        self._commit_data(dom, target, job)  # what the guest wrote since `ready`, mirrored
        del dom.jobs[target]
        base = job.base
        self._edit_live(dom, target, lambda disk: _become(disk, base, terminate=True))
        defined = ET.fromstring(dom.definition)
        _become(_disk(defined, target), base, terminate=False)
        dom.definition = ET.tostring(defined, encoding="unicode")

    def block_job_abort(self, name: str, target: str) -> None:
        self.calls.append(f"block_job_abort({name}, {target})")
        dom = self._live(name)
        if dom.jobs.pop(target, None) is None:
            raise OperationFailed(f"abort of the block job on {name}/{target}: no job")
        self._edit_live(dom, target, _drop_mirror)

    # -- inside

    def _domain(self, name: str) -> FakeDomain:
        dom = self.domains.get(name)
        if dom is None:
            raise NotFound(f"domain {name!r}: no such domain")
        return dom

    def _live(self, name: str) -> FakeDomain:
        dom = self._domain(name)
        if dom.state not in LIVE:
            raise Precondition(f"domain {name!r}: domain is not running", reason="DOMAIN_STATE")
        return dom

    def _edit_live(
        self, dom: FakeDomain, target: str, edit: Callable[[ET.Element], object]
    ) -> None:
        assert dom.live is not None
        root = ET.fromstring(dom.live)
        edit(_disk(root, target))
        dom.live = ET.tostring(root, encoding="unicode")

    def _commit_data(self, dom: FakeDomain, target: str, job: BlockJob) -> None:
        """The data of the committed layers in the base, as QEMU's commit leaves it."""
        assert job.base is not None
        if job.base.get("type") == "network":
            spec = _rbd_name(job.base)
            self.rbd.images[spec].data.update(self.overlay_writes.get(job.top, {}))
        else:
            images.commit(job.top, _file(job.base))

    def _complete(self, dom: FakeDomain, target: str, job: BlockJob) -> None:
        del dom.jobs[target]
        if job.kind == "pull":
            images.pull(job.top)
            self._edit_live(dom, target, _without_backing)
            defined = ET.fromstring(dom.definition)
            _without_backing(_disk(defined, target))
            dom.definition = ET.tostring(defined, encoding="unicode")
            return
        assert job.base is not None
        base, base_format = _file(job.base), _node_format(job.base)
        self._commit_data(dom, target, job)
        assert dom.live is not None
        root = ET.fromstring(dom.live)
        above = _above(_disk(root, target), job.top)
        images.rebase_unsafe(_file(above), base, base_format)
        _relink(above, base)
        dom.live = ET.tostring(root, encoding="unicode")
        defined = ET.fromstring(dom.definition)
        disk = _disk(defined, target)
        if job.top in [_file(n) for n in _nodes(disk) if n.get("type") == "file"][1:]:
            _relink(_above(disk, job.top), base)
            dom.definition = ET.tostring(defined, encoding="unicode")


# -- domain XML, as libvirt writes it


def _disks(root: ET.Element) -> list[ET.Element]:
    return [d for d in root.findall("devices/disk") if d.get("device", "disk") == "disk"]


def _target(disk: ET.Element) -> str:
    target = disk.find("target")
    assert target is not None
    return target.get("dev", "")


def _disk(root: ET.Element, target: str) -> ET.Element:
    for disk in _disks(root):
        if _target(disk) == target:
            return disk
    raise NotFound(f"the domain has no disk {target!r}")


def _nodes(disk: ET.Element) -> list[ET.Element]:
    """The disk and each `<backingStore>` below it that names an image, active first."""
    found = []
    node: ET.Element | None = disk
    while node is not None and node.find("source") is not None:
        found.append(node)
        node = node.find("backingStore")
    return found


def _file(node: ET.Element) -> str:
    source = node.find("source")
    assert source is not None and source.get("file"), ET.tostring(node)
    return source.get("file", "")


def _rbd_name(node: ET.Element) -> str:
    source = node.find("source")
    assert source is not None and source.get("protocol") == "rbd", ET.tostring(node)
    return source.get("name", "")


def _where(disk: ET.Element) -> str:
    return f"rbd:{_rbd_name(disk)}" if disk.get("type") == "network" else f"file:{_file(disk)}"


def _format(disk: ET.Element) -> str:
    driver = disk.find("driver")
    return "raw" if driver is None else driver.get("type", "raw")


def _node_format(node: ET.Element) -> str:
    if node.tag == "disk":
        return _format(node)
    fmt = node.find("format")
    return "raw" if fmt is None else fmt.get("type", "raw")


def _index(paths: list[str | None], path: str, error: str) -> int:
    if path not in paths:
        raise OperationFailed(error)
    return paths.index(path)


def _insert_after(parent: ET.Element, child: ET.Element, new: ET.Element) -> None:
    parent.insert(list(parent).index(child) + 1, new)


def _switch_to_overlay(disk: ET.Element, overlay: str, *, terminate: bool) -> None:
    """An external snapshot of one disk: the old source becomes the first backing node."""
    old_source = disk.find("source")
    assert old_source is not None
    node = ET.Element("backingStore", type=disk.get("type", "file"))
    ET.SubElement(node, "format", type=_format(disk))
    source = copy.deepcopy(old_source)
    source.attrib.pop("index", None)
    node.append(source)
    old_backing = disk.find("backingStore")
    if old_backing is not None:
        disk.remove(old_backing)
        node.append(old_backing)
    elif terminate and disk.get("type") == "file":
        ET.SubElement(node, "backingStore")
    disk.set("type", "file")
    driver = disk.find("driver")
    assert driver is not None
    driver.set("type", "qcow2")
    place = list(disk).index(old_source)
    disk.remove(old_source)
    new_source = ET.Element("source", file=overlay)
    disk.insert(place, new_source)
    disk.insert(place + 1, node)


def _become(disk: ET.Element, node: ET.Element, *, terminate: bool) -> None:
    """After a pivot: the disk is the chain node it was committed into."""
    node = copy.deepcopy(node)
    disk.set("type", node.get("type", "file"))
    driver = disk.find("driver")
    assert driver is not None
    driver.set("type", _node_format(node))
    old_source = disk.find("source")
    assert old_source is not None
    place = list(disk).index(old_source)
    for old in [*disk.findall("source"), *disk.findall("backingStore")]:
        disk.remove(old)
    _drop_mirror(disk)
    new_source = node.find("source")
    assert new_source is not None
    disk.insert(place, new_source)
    below = node.find("backingStore")
    if below is not None and (terminate or below.find("source") is not None):
        disk.insert(place + 1, below)
    elif terminate and disk.get("type") == "file":
        disk.insert(place + 1, ET.Element("backingStore"))


def _mirror(disk: ET.Element) -> ET.Element:
    mirror = disk.find("mirror")
    assert mirror is not None
    return mirror


def _drop_mirror(disk: ET.Element) -> None:
    for mirror in disk.findall("mirror"):
        disk.remove(mirror)


def _without_backing(disk: ET.Element) -> None:
    source = disk.find("source")
    assert source is not None
    for old in disk.findall("backingStore"):
        disk.remove(old)
    if disk.find("target") is not None:
        _insert_after(disk, source, ET.Element("backingStore"))


def _above(disk: ET.Element, top: str) -> ET.Element:
    """The chain node whose backing node is the image `top`."""
    nodes = _nodes(disk)
    for upper, lower in itertools.pairwise(nodes):
        if lower.get("type") == "file" and _file(lower) == top:
            return upper
    raise OperationFailed(f"{top} is not below the active image")


def _relink(node: ET.Element, base: str) -> None:
    """`node`'s backing node becomes the one of image `base` further down its chain."""
    current = node.find("backingStore")
    while current is not None and not (current.get("type") == "file" and _file(current) == base):
        current = current.find("backingStore")
    assert current is not None, f"{base} is not below"
    for old in node.findall("backingStore"):
        node.remove(old)
    node.append(current)
