"""One host for an engine test: a pool directory of real qcow2 images, a FakeRbd, a FakeHost
whose domains start from the XML recorded from the lab (tests/unit/data/, made with
`virsh dumpxml` and `virsh dumpxml --inactive`), and the agent's state directory.

Each `services()` is one agent process over that host: its own Services (journal connection,
locks, holds), the host, the images and the journal file shared. `killed_at` runs an operation
in an agent process that dies at a fault step (agent/faults.py): the thread that reached the
step never runs again, as a process killed with SIGKILL; no `finally`, undo or journal
completion of it runs. A new `services()` is then the restarted agent."""

from __future__ import annotations

import re
import threading
import time
import xml.etree.ElementTree as ET
from collections.abc import Callable
from contextlib import AbstractContextManager
from pathlib import Path

import pytest

from agent import faults
from agent.backups import targets
from agent.config import AgentConfig
from agent.hypervisor import image_io, nbd_image
from agent.hypervisor.ports import ExtentReader, ExtentWriter
from agent.jobs import Journal
from agent.model import RbdSource
from agent.operations import recovery
from agent.operations.services import Services
from tests.unit.engine import images
from tests.unit.engine.host import FakeDomain, FakeHost
from tests.unit.engine.rbd import FakeRbd
from tests.unit.engine.repository import FakeRepository

DATA = Path(__file__).resolve().parents[1] / "data"
# Not the lab's names: merge.make_durable asks /run/libvirt/qemu/<domain>.pid of the real host.
QCOW2 = "engine-qcow2"
RBD = "engine-rbd"
RBD_IMAGE = "rbd/engine-rbd"
TARGET = "secondary"


def recorded(name: str) -> tuple[str, str]:
    """The lab domain's live and inactive XML as recorded."""
    return (DATA / f"{name}.live.xml").read_text(), (DATA / f"{name}.inactive.xml").read_text()


def _renamed(xml: str, name: str, uuid: str, disk: Callable[[ET.Element], None]) -> str:
    root = ET.fromstring(xml)
    name_element, uuid_element = root.find("name"), root.find("uuid")
    assert name_element is not None and uuid_element is not None
    name_element.text, uuid_element.text = name, uuid
    for element in root.iter("disk"):
        disk(element)
    text = ET.tostring(root, encoding="unicode")
    # Nothing of the lab's paths is left (its logs, its Ceph config).
    return re.sub(r"/var/lib/hostsnap-lab/[^'\"<]*", f"/nonexistent/{name}", text)


class EngineImages:
    """qcow2 images through the real qemu-nbd; the fake host's RBD images are not read."""

    def reading_file(
        self, path: str, since_depth: int | None
    ) -> AbstractContextManager[ExtentReader]:
        return nbd_image.reading(path, since_depth)

    def creating_file(self, path: str, size: int) -> AbstractContextManager[ExtentWriter]:
        return nbd_image.writing_new(path, size)

    def reading_rbd(
        self, source: RbdSource, snapshot: str, since: str | None
    ) -> AbstractContextManager[ExtentReader]:
        raise AssertionError("the engine tier reads no RBD image (the lab does)")

    def creating_rbd(self, source: RbdSource, size: int) -> AbstractContextManager[ExtentWriter]:
        raise AssertionError("the engine tier writes no RBD image (the lab does)")

    def overwriting_rbd(self, source: RbdSource, size: int) -> AbstractContextManager[ExtentWriter]:
        raise AssertionError("the engine tier writes no RBD image (the lab does)")

    def remove_rbd(self, source: RbdSource) -> None:
        raise AssertionError("the engine tier removes no RBD image (the lab does)")

    def remove_file(self, path: str) -> None:
        Path(path).unlink(missing_ok=True)

    def publish_file(self, staged: str, final: str) -> None:
        image_io.publish_file(staged, final)

    def publish_rbd(self, staged: RbdSource, final: RbdSource) -> None:
        raise AssertionError("the engine tier renames no RBD image (the lab does)")


class Killed:
    """An agent process that died at a fault step."""

    def __init__(self, step: str, thread: threading.Thread, outcome: list[object]) -> None:
        self.step = step
        self.thread = thread
        self.outcome = outcome


class World:
    def __init__(self, root: Path, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root = root
        self.pool = root / "pool"
        self.pool.mkdir()
        self._monkeypatch = monkeypatch
        self.rbd = FakeRbd()
        self.host = FakeHost(self.rbd)
        # No Ceph here: an rbd: backing that qemu-img would open fails at once.
        self.ceph_conf = str(root / "no-ceph.conf")
        self.config = AgentConfig(
            state_dir=root / "state",
            ceph_conf=self.ceph_conf,
            freeze_deadline=30.0,
            block_job_timeout=30.0,
            rbd_overlay_min_free=0,
            backup_targets_dir=root / "targets",
        )
        targets.add(self.config.backup_targets_dir, TARGET, "/srv/fake-target")
        self.target = FakeRepository()
        self._opened: list[Services] = []

    # -- domains

    def qcow2_domain(self, running: bool = True, name: str = QCOW2) -> FakeDomain:
        """A domain on one qcow2 file, as lab-qcow2 (the image made here, empty)."""
        path = str(self.pool / f"{name}.qcow2")
        images.create(path)

        def disk(element: ET.Element) -> None:
            source = element.find("source")
            if source is not None and source.get("file"):
                source.set("file", path)

        live, inactive = recorded("lab-qcow2")
        uuid = "715d0c9f-5446-4dbb-8333-86085ed0a2b3"
        return self.host.add(
            _renamed(live, name, uuid, disk), _renamed(inactive, name, uuid, disk), running
        )

    def rbd_domain(self, running: bool = True, name: str = RBD) -> FakeDomain:
        """A domain on one raw RBD image, as lab-rbd (the image in the FakeRbd)."""
        spec = f"rbd/{name}"
        self.rbd.add(spec)

        def disk(element: ET.Element) -> None:
            source = element.find("source")
            if source is not None and source.get("protocol") == "rbd":
                source.set("name", spec)
                for host in source.findall("host"):
                    host.set("port", "1")  # nothing listens there
                config = source.find("config")
                if config is not None:
                    config.set("file", self.ceph_conf)

        live, inactive = recorded("lab-rbd")
        uuid = "fa96316d-e69e-4f32-a4ba-8e2d33999e6c"
        return self.host.add(
            _renamed(live, name, uuid, disk), _renamed(inactive, name, uuid, disk), running
        )

    # -- agent processes

    def services(self) -> Services:
        svc = Services(
            config=self.config,
            host=self.host,
            rbd=self.rbd,
            images=EngineImages(),
            repository=lambda target: self.target,
            journal=Journal(self.config.journal_path, clock=time.time),
            guest_agents=self.host.guest,
            # The fake host's block jobs end in a few polls: no need to wait between them.
            sleep=lambda seconds: time.sleep(0.001),
        )
        self._opened.append(svc)
        return svc

    def close(self) -> None:
        for svc in self._opened:
            svc.journal.close()

    def killed_at(
        self,
        step: str,
        operation: Callable[[Services], object],
        at_step: Callable[[], None] = lambda: None,
        domain: str | None = None,
    ) -> Killed:
        """Runs `operation` in an agent process that dies when it reaches `step` (of
        `domain`, when given); `at_step` runs first, in the dying process (a guest writing
        meanwhile). Fails when the operation ends without reaching the step."""
        assert step in faults.STEPS, step
        svc = self.services()
        reached = threading.Event()
        never = threading.Event()
        outcome: list[object] = []
        real_point = faults.point

        def point(name: faults.Step, point_domain: str | None = None) -> None:
            real_point(name, point_domain)
            if name != step or threading.current_thread() is not thread:
                return
            if domain is not None and point_domain not in (None, domain):
                return
            at_step()
            reached.set()
            never.wait()  # killed: this process runs no further

        def run() -> None:
            try:
                outcome.append(operation(svc))
            except BaseException as e:
                outcome.append(e)

        self._monkeypatch.setattr(faults, "point", point)
        thread = threading.Thread(target=run, name=f"agent-killed-at-{step}", daemon=True)
        thread.start()
        while not reached.wait(0.005):
            if not thread.is_alive():
                raise AssertionError(f"the operation ended without reaching {step}: {outcome}")
        self._monkeypatch.setattr(faults, "point", real_point)
        return Killed(step, thread, outcome)

    def restarted(self) -> tuple[Services, list[recovery.Recovered]]:
        """A new agent process over the same host and journal, after its start-up recovery."""
        svc = self.services()
        return svc, recovery.recover(svc)
