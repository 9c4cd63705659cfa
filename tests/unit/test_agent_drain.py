"""`hostsnap-agent --drain` against the agent's real server on a unix socket (over a fake host):
new jobs and group holds are refused while the running job goes on, the drain ends when it
has ended, waits no longer than its timeout, and is a no-op without an agent."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from types import SimpleNamespace
from typing import Any

import grpc
import pytest

from agent import drain
from agent.main import main
from agent.service.app import build_server
from agent.service.executor import JobExecutor
from agent.service.servicer import AgentServicer
from agent.settings import ListenSettings, Settings
from hostsnap.agent.v1 import agent_pb2 as pb

JOB = "a" * 32
HOLD = "b" * 32


async def serving(
    tmp_path: Path, test: Callable[[str, JobExecutor], Awaitable[Any]], held: list[str]
) -> Any:
    socket = str(tmp_path / "run" / "agent.sock")
    settings = Settings(
        listen=ListenSettings(unix_socket=socket), audit_log=str(tmp_path / "audit.log")
    )
    journal = SimpleNamespace(
        listeners=[], jobs=lambda state: [SimpleNamespace(id=i) for i in held]
    )
    executor = JobExecutor(2, lambda job_id, why: None)
    server, _ = build_server(
        settings, AgentServicer(SimpleNamespace(journal=journal), settings, executor)
    )  # type: ignore[arg-type]
    await server.start()
    try:
        return await test(socket, executor)
    finally:
        await server.stop(None)
        executor.shutdown()


async def start_job(executor: JobExecutor, release: threading.Event) -> None:
    def operation(started: Callable[[str], None]) -> None:
        started(JOB)
        release.wait(30)

    assert await executor.start(operation) == JOB


def refusal(call: Callable[[], Any]) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as refused:
        call()
    return refused.value.code(), dict(refused.value.trailing_metadata())["hostsnap-reason"]


def test_a_drain_refuses_new_jobs_and_ends_when_the_running_one_has_ended(tmp_path: Path):
    release = threading.Event()
    said: list[str] = []
    polls: list[float] = []

    def released_on_the_first_wait(seconds: float) -> None:
        polls.append(seconds)
        stub = drain.connect(str(tmp_path / "run" / "agent.sock"))
        # Drained: neither a job nor a group hold starts, the running job goes on.
        assert refusal(lambda: stub.Consolidate(pb.ChainRequest(domain="vm"), timeout=10)) == (
            grpc.StatusCode.UNAVAILABLE,
            "AGENT_DRAINING",
        )
        assert refusal(
            lambda: stub.FreezeForGroup(
                pb.GroupFreezeRequest(domain="vm", group_id="g"), timeout=10
            )
        ) == (grpc.StatusCode.UNAVAILABLE, "AGENT_DRAINING")
        release.set()
        time.sleep(0.05)

    async def test(socket: str, executor: JobExecutor) -> int:
        await start_job(executor, release)
        return await asyncio.to_thread(
            drain.drain,
            drain.connect(socket),
            60,
            say=said.append,
            sleep=released_on_the_first_wait,
        )

    try:
        assert asyncio.run(serving(tmp_path, test, held=[])) == drain.DRAINED
    finally:
        release.set()
    assert polls and polls[0] == drain.POLL_SECONDS
    assert said[0].endswith("waiting for the running ones to end")
    assert said[-1] == "hostsnap-agent: drained: no job runs"


def test_a_drain_waits_no_longer_than_its_timeout_and_names_what_still_runs(tmp_path: Path):
    release = threading.Event()
    said: list[str] = []
    now = [100.0]

    async def test(socket: str, executor: JobExecutor) -> int:
        await start_job(executor, release)
        answer = await asyncio.to_thread(
            drain.drain,
            drain.connect(socket),
            12,
            say=said.append,
            clock=lambda: now[0],
            sleep=lambda s: now.__setitem__(0, now[0] + s),
        )
        release.set()  # before the server stops, which waits for its jobs
        return answer

    try:
        # A group hold is a running job of the journal, not of the executor.
        assert asyncio.run(serving(tmp_path, test, held=[HOLD])) == drain.NOT_DRAINED
    finally:
        release.set()
    assert now[0] == 112.0  # polled at 0, 5, 10 and 12 s
    assert f"jobs still running after 12 s: {JOB}, {HOLD};" in said[-1]


def test_drain_without_a_running_agent_says_so_and_succeeds(tmp_path: Path, capsys):
    config = tmp_path / "agent.toml"
    config.write_text(f'[listen]\nunix_socket = "{tmp_path / "none" / "agent.sock"}"\n')

    assert main(["--config", str(config), "--drain", "--timeout", "5"]) == drain.DRAINED
    assert "no agent answers on this host: nothing to drain" in capsys.readouterr().out


@pytest.mark.parametrize("timeout", ["-1", "inf", "nan"])
def test_a_drain_timeout_must_be_finite_seconds(timeout: str, capsys):
    with pytest.raises(SystemExit):
        main(["--drain", "--timeout", timeout])
    assert "is not a finite number of seconds" in capsys.readouterr().err
