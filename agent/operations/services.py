"""What every operation works with: configuration, the adapters (as the Protocols of
agent/hypervisor/ports.py), journal, locks, clock. agent/wiring.py builds the real ones."""

from __future__ import annotations

import json
import os
import tempfile
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field

from agent.admission import Admission, AdmissionConfig
from agent.backups.targets import Target
from agent.config import AgentConfig
from agent.hypervisor.ports import (
    BackupRepository,
    Clock,
    Guest,
    GuestAgents,
    Host,
    Images,
    Rbd,
    Sleep,
)
from agent.jobs import Journal
from agent.locks import VolumeLocks
from agent.operations.holds import Holds

_publish_lock = threading.Lock()


# Why a job was asked to stop when its requester did not ask (the caller went away before it
# learned the job's id; the agent is stopping): the job ends CANCELLED, undone, and its
# idempotency key may start a new job (agent/jobs.py RETRYABLE_REASONS).
CALLER_GONE = "CALLER_GONE"
AGENT_STOPPING = "AGENT_STOPPING"


class Cancellations:
    """Jobs asked to stop at their next safe point, with why."""

    def __init__(self) -> None:
        self._wanted: dict[str, str] = {}
        self._lock = threading.Lock()

    def request(self, job_id: str, reason: str = "CANCELLED") -> None:
        with self._lock:
            self._wanted.setdefault(job_id, reason)

    def requested(self, job_id: str) -> bool:
        with self._lock:
            return job_id in self._wanted

    def why(self, job_id: str) -> str | None:
        with self._lock:
            return self._wanted.get(job_id)

    def forget(self, job_id: str) -> None:
        with self._lock:
            self._wanted.pop(job_id, None)


def _no_repositories(target: Target) -> BackupRepository:
    raise AssertionError(f"no backup repositories were given to these Services ({target.name})")


def _no_guest_agents(domain: str) -> Guest:
    raise AssertionError(f"no guest agents were given to these Services (domain {domain})")


@dataclass
class Services:
    config: AgentConfig
    host: Host
    rbd: Rbd
    journal: Journal
    guest_agents: GuestAgents = _no_guest_agents
    images: Images | None = None  # backups and restores read and write images through it
    repository: Callable[[Target], BackupRepository] = _no_repositories
    locks: VolumeLocks = field(default_factory=VolumeLocks)
    cancellations: Cancellations = field(default_factory=Cancellations)
    holds: Holds = field(default_factory=Holds)  # guests held frozen for consistency groups
    monotonic: Clock = time.monotonic
    wall_clock: Clock = time.time
    sleep: Sleep = time.sleep  # between the polls of a block job
    # Told each freeze's duration and each job's (operation, result, seconds): the metrics.
    observe_freeze: Callable[[float], None] = lambda seconds: None
    observe_job: Callable[[str, str, float], None] = lambda operation, result, seconds: None

    admission: Admission = field(
        default_factory=lambda: Admission(AdmissionConfig(), lambda: None, lambda pools: {})
    )

    def close(self) -> None:
        self.journal.close()
        self.rbd.close()

    def guest_agent(self, domain: str) -> Guest:
        """The guest agent of a domain (NotFound for an unknown domain)."""
        return self.guest_agents(domain)

    def publish_layers(self, pending: dict[str, dict[str, str]] | None = None) -> None:
        """Writes the stale-layer map the libvirt hook reads: the journal's, plus `pending`
        entries of a snapshot about to switch. Atomic and durable (write, fsync, rename)."""
        stale = {**self.journal.stale_layers(), **(pending or {})}
        path = self.config.layers_path
        with _publish_lock:
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=".layers-")
            with os.fdopen(fd, "w") as f:
                json.dump(stale, f, indent=1, sort_keys=True)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, 0o644)
            os.replace(tmp, path)
