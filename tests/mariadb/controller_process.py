"""A controller reduced to election and dispatch, run as its own process by the failover tests:
`python -m tests.mariadb.controller_process --url URL --holder NAME --agent PATH --events PATH`.

It follows the dispatch protocol of `controller.store.jobs`: on becoming leader it adopts the
in-flight jobs of earlier epochs and sends the DISPATCHING ones again; then it claims due jobs
one at a time, checks that it still leads, sends each to the fake agent with its idempotency
key and records the agent's job id. Every step is a JSON line in the events file.

Faults on request: `--hang-after-send N` stops after sending the N-th job, before recording it
(the test then kills the process); `--pause-before-send N` stops the process itself (SIGSTOP)
after claiming the N-th job and before sending it (the test continues it later).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from pathlib import Path
from typing import Any

from controller.store import Job, LeaderElection, Lease, LeaseConfig, LeaseLost, Store
from tests.mariadb.fake_agent import FakeAgent


class Events:
    def __init__(self, path: Path, holder: str) -> None:
        self._file = path.open("a", buffering=1)
        self._holder = holder

    def __call__(self, event: str, **fields: Any) -> None:
        record = {"event": event, "holder": self._holder, "at": time.monotonic(), **fields}
        self._file.write(json.dumps(record) + "\n")


def read_events(path: Path) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.endswith("}")]


class Controller:
    def __init__(self, args: argparse.Namespace) -> None:
        self.args = args
        self.store = Store.open(args.url)
        config = LeaseConfig(
            duration=args.duration,
            renew_interval=args.renew,
            retry_interval=args.retry,
            margin=args.margin,
        )
        self.election = LeaderElection(self.store.leases, config, holder=args.holder)
        self.agent = FakeAgent(Path(args.agent))
        self.event = Events(Path(args.events), args.holder)
        self.claimed = 0

    def run(self) -> None:
        self.event("started")
        backlog: list[Job] = []
        led: int | None = None
        next_tick = 0.0
        while True:
            if time.monotonic() >= next_tick:
                next_tick = time.monotonic() + self.election.tick()
            lease = self.election.leader()
            if lease is None:
                if led is not None:
                    self.event("lost", epoch=led)
                led = None
                time.sleep(0.02)
                continue
            if lease.epoch != led:
                led = lease.epoch
                adopted = self.store.jobs.adopt(lease)
                backlog = [job for job in adopted if job.agent_job_id is None]
                self.event(
                    "leader",
                    epoch=lease.epoch,
                    adopted=[j.idempotency_key for j in adopted],
                    resend=[j.idempotency_key for j in backlog],
                )
            if backlog:
                self.dispatch(lease, backlog.pop(0), resend=True)
                continue
            due = self.store.jobs.claim_due(lease, 1)
            if due:
                self.claimed += 1
                self.dispatch(lease, due[0], resend=False)
            else:
                time.sleep(0.02)

    def dispatch(self, lease: Lease, job: Job, *, resend: bool) -> None:
        key = job.idempotency_key
        if not resend and self.claimed == self.args.pause_before_send:
            self.event("pausing", key=key)
            os.kill(os.getpid(), signal.SIGSTOP)
            self.event("continued", key=key)
        current = self.election.leader()
        if current is None or current.epoch != lease.epoch:
            self.event("refused", key=key, epoch=lease.epoch)  # not leading now: send nothing
            return
        agent_job = self.agent.submit(key, self.args.holder)
        self.event("sent", key=key, epoch=lease.epoch, agent_job=agent_job, resend=resend)
        if not resend and self.claimed == self.args.hang_after_send:
            self.event("hanging", key=key)
            time.sleep(3600)
        try:
            self.store.jobs.mark_running(lease, job.id, agent_job)
            self.event("running", key=key, epoch=lease.epoch)
        except LeaseLost:
            self.event("fenced", key=key, epoch=lease.epoch)
        time.sleep(self.args.send_delay)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--url", required=True)
    parser.add_argument("--holder", required=True)
    parser.add_argument("--agent", required=True)
    parser.add_argument("--events", required=True)
    parser.add_argument("--duration", type=float, default=1.0)
    parser.add_argument("--renew", type=float, default=0.25)
    parser.add_argument("--retry", type=float, default=0.1)
    parser.add_argument("--margin", type=float, default=0.2)
    parser.add_argument("--send-delay", type=float, default=0.02)
    parser.add_argument("--hang-after-send", type=int, default=0)
    parser.add_argument("--pause-before-send", type=int, default=0)
    Controller(parser.parse_args()).run()


if __name__ == "__main__":
    main()
