"""`hostsnap-agent --drain`: asks the agent running on this host, over its unix socket, to
start no new job, and waits until its running jobs have ended or the timeout has passed. The
packages run it before an upgrade restarts the agent (or a removal stops it), so that a long
consolidation is not cut short; the restart then ends the drain."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import grpc

from hostsnap.agent.v1 import agent_pb2 as pb
from hostsnap.agent.v1 import agent_pb2_grpc

POLL_SECONDS = 5.0
CALL_TIMEOUT = 30.0
# Exit codes: drained (or no agent to drain), and jobs still running at the timeout (or an
# agent that cannot drain): the caller restarts it anyway, and its jobs stop at their next
# safe point as on any stop; the next start recovers them.
DRAINED = 0
NOT_DRAINED = 1


def connect(socket: str) -> Any:
    return agent_pb2_grpc.AgentServiceStub(grpc.insecure_channel(f"unix:{socket}"))


def drain(
    stub: Any,
    timeout: float,
    *,
    say: Callable[[str], None] = print,
    clock: Callable[[], float] = time.monotonic,
    sleep: Callable[[float], None] = time.sleep,
) -> int:
    deadline = clock() + timeout
    asked = False
    while True:
        try:
            reply = stub.Drain(pb.DrainRequest(), timeout=CALL_TIMEOUT)
        except grpc.RpcError as e:
            reason = dict(e.trailing_metadata() or ()).get("hostsnap-reason")
            if e.code() == grpc.StatusCode.UNAVAILABLE and not reason and not asked:
                say("hostsnap-agent: no agent answers on this host: nothing to drain")
                return DRAINED
            if e.code() == grpc.StatusCode.UNIMPLEMENTED:
                say("hostsnap-agent: the running agent cannot drain (an older version)")
                return NOT_DRAINED
            if clock() >= deadline or reason is None:
                say(f"hostsnap-agent: drain failed: {e.code().name}: {e.details()}")
                return NOT_DRAINED
            sleep(min(POLL_SECONDS, max(deadline - clock(), 0)))
            continue
        if not asked:
            say("hostsnap-agent: draining: no new jobs; waiting for the running ones to end")
            asked = True
        running = list(reply.running_job_ids)
        if not running and not reply.starting:
            say("hostsnap-agent: drained: no job runs")
            return DRAINED
        if clock() >= deadline:
            say(
                f"hostsnap-agent: jobs still running after {timeout:.0f} s: "
                f"{', '.join(running) or f'{reply.starting} starting'}; a restart stops them at "
                "their next safe point and the next start recovers them"
            )
            return NOT_DRAINED
        sleep(min(POLL_SECONDS, max(deadline - clock(), 0)))
