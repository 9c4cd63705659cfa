"""`hostsnap-agent --thaw-after-exit`, the unit's `ExecStopPost=`: systemd runs it once the agent
has ended, however it ended (SIGKILL and crashes included), before any restart. Guests the
journal says the agent froze and did not thaw are thawed now, not when a new agent's recovery
gets to them (RestartSec= and a start later). It only thaws and records the thaw; the jobs
are left to the next start's recovery."""

from __future__ import annotations

import fcntl
import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

from agent import steps, wiring
from agent.config import AgentConfig
from agent.errors import HostsnapError
from agent.hypervisor import domain_xml
from agent.hypervisor.libvirt_host import LibvirtHost
from agent.hypervisor.ports import GuestAgents, Host
from agent.jobs import Job, Journal
from agent.operations import block_jobs, consistency, quiesce, snapshot, volumes

log = logging.getLogger(__name__)

AGENT_RUNS = 1
# A snapshot switches its disks in one libvirt call, which libvirtd finishes after the agent
# died: a thaw before it ends would make the snapshot crash-consistent only.
SWITCH_WAIT_SECONDS = 5.0


class AgentRunning(Exception):
    pass


@contextmanager
def agent_lock(config: AgentConfig) -> Iterator[None]:
    """Held by the serving agent for its lifetime; the kernel drops it when the process dies,
    however it dies. --thaw-after-exit takes it too, so it never thaws under a live agent."""
    path = config.state_dir / "agent.lock"
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("a") as f:
        try:
            fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise AgentRunning(f"{path} is held: an agent runs with this state directory") from None
        yield


def thaw_left_frozen(
    journal: Journal,
    host: Host,
    guest_agent: GuestAgents,
    clock: Callable[[], float] = time.monotonic,
    wall_clock: Callable[[], float] = time.time,
) -> list[str]:
    """Thaws the guests of the journal's jobs left frozen; returns the domains thawed."""
    thawed = []
    for job in journal.jobs_left_frozen():
        try:
            if not host.exists(job.domain) or not volumes.is_live(host.state(job.domain)[0]):
                continue
            switched = _wait_for_switch(host, job, clock)
            quiesce.thaw_confirmed(guest_agent(job.domain), job.domain, clock)
        except HostsnapError as e:
            log.error("domain %s may still be frozen (job %s): %s", job.domain, job.id, e)
            continue
        frozen_at = steps.when(job, quiesce.Step.FROZEN)
        frozen_seconds = None if frozen_at is None else max(wall_clock() - frozen_at, 0.0)
        done = quiesce.Thawed(frozen_seconds, consistency.THAWED_AFTER_EXIT, switched)
        steps.write(journal, job.id, quiesce.Step.THAWED, done)
        log.warning("domain %s: thawed after the agent's exit (job %s)", job.domain, job.id)
        thawed.append(job.domain)
    return thawed


def _wait_for_switch(host: Host, job: Job, clock: Callable[[], float]) -> bool | None:
    """For a snapshot that died in its switch: whether the disks were seen on their new
    overlays (None when the job was not switching)."""
    plan = steps.read(job, snapshot.Step.PLAN, snapshot.PlanRecord)
    if plan is None or not job.steps or job.steps[-1].name != snapshot.Step.SWITCH_ACTIVE:
        return None
    wanted = plan.switches()

    def look() -> str | None:
        try:
            return host.xml(job.domain)
        except HostsnapError:
            return None  # libvirt cannot say; the thaw must not wait on it

    def switched(xml: str | None) -> bool:
        return xml is None or all(
            domain_xml.backing_chain(xml, t)[:1] == [o] for t, o in wanted.items()
        )

    xml, ok = block_jobs.until(look, switched, SWITCH_WAIT_SECONDS, clock, time.sleep)
    return ok and xml is not None


def run(config: AgentConfig) -> int:
    if not Path(config.journal_path).exists():
        log.info("no journal at %s: the agent never ran, nothing to thaw", config.journal_path)
        return 0
    try:
        with agent_lock(config):
            host = LibvirtHost(config.libvirt_uri)
            journal = Journal(config.journal_path)
            try:
                guest_agent = wiring.guest_agents(host, config.guest_agent_timeout)
                thawed = thaw_left_frozen(journal, host, guest_agent)
            finally:
                journal.close()
    except AgentRunning as e:
        log.error("not thawing anything: %s; it thaws its own guests", e)
        return AGENT_RUNS
    except HostsnapError as e:
        log.error("could not look for guests left frozen: %s", e)
        return 1
    log.info("thawed after the agent's exit: %s", ", ".join(thawed) or "nothing was frozen")
    return 0
