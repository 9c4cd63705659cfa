"""The controller's agent client against a fake agent on a real grpc.aio server: gRPC status
codes become typed errors (transient or not, with the agent's reason), each call has its
deadline, jobs are followed to their end, and mutual TLS with the controller's certificate."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TypeVar

import grpc
import pytest

from controller.agents import (
    AgentBusy,
    AgentClient,
    AgentError,
    AgentJobState,
    AgentRefused,
    AgentUnavailable,
    TlsFiles,
)
from tests.grpc_fake_agent import FakeAgent, FakeAgentServer
from tests.lab.agent_process import free_port, make_ca, make_cert

T = TypeVar("T")


def with_agent(
    agent: FakeAgent,
    test: Callable[[AgentClient], Awaitable[T]],
    *,
    call_timeout: float = 2.0,
) -> T:
    async def main() -> T:
        servers = FakeAgentServer()
        client = AgentClient(await servers.start(agent), None, call_timeout=call_timeout)
        try:
            return await test(client)
        finally:
            await client.close()
            await servers.stop()

    return asyncio.run(main())


def refused_with(code: grpc.StatusCode) -> AgentError:
    agent = FakeAgent("kvm-1", refuse=[code])

    async def test(client: AgentClient) -> AgentError:
        with pytest.raises(AgentError) as raised:
            await client.create_snapshot("i-2-10-VM", idempotency_key="k-1")
        return raised.value

    return with_agent(agent, test)


@pytest.mark.parametrize(
    ("code", "kind", "transient"),
    [
        (grpc.StatusCode.UNAVAILABLE, AgentUnavailable, True),
        (grpc.StatusCode.DEADLINE_EXCEEDED, AgentUnavailable, True),
        (grpc.StatusCode.ABORTED, AgentBusy, True),
        (grpc.StatusCode.RESOURCE_EXHAUSTED, AgentBusy, True),
        (grpc.StatusCode.FAILED_PRECONDITION, AgentRefused, False),
        (grpc.StatusCode.INVALID_ARGUMENT, AgentRefused, False),
        (grpc.StatusCode.NOT_FOUND, AgentRefused, False),
        (grpc.StatusCode.PERMISSION_DENIED, AgentRefused, False),
        (grpc.StatusCode.INTERNAL, AgentRefused, False),
    ],
)
def test_status_codes_become_typed_errors_with_the_agents_reason(code, kind, transient):
    error = refused_with(code)

    assert type(error) is kind and error.transient is transient
    assert (error.code, error.reason) == (code.name, "TEST")
    assert "CreateSnapshot" in str(error) and code.name in str(error)


def test_an_agent_nobody_listens_for_is_unavailable():
    async def main() -> None:
        client = AgentClient(f"127.0.0.1:{free_port()}", None, call_timeout=2.0)
        try:
            with pytest.raises(AgentUnavailable):
                await client.host_info()
        finally:
            await client.close()

    asyncio.run(main())


def test_a_call_past_its_deadline_is_unavailable_with_deadline_exceeded():
    agent = FakeAgent("kvm-1", host_info_delay=1.0)

    async def test(client: AgentClient) -> AgentError:
        with pytest.raises(AgentUnavailable) as raised:
            await client.host_info(timeout=0.05)
        return raised.value

    assert with_agent(agent, test).code == "DEADLINE_EXCEEDED"


def test_the_same_key_returns_the_same_agent_job_and_watch_follows_it_to_the_end():
    agent = FakeAgent("kvm-1", job_seconds=0.01)

    async def test(client: AgentClient) -> None:
        first = await client.create_snapshot("i-2-10-VM", idempotency_key="k-1", disks=["vda"])
        again = await client.create_snapshot("i-2-10-VM", idempotency_key="k-1", disks=["vda"])
        assert first.id == again.id and first.state is AgentJobState.RUNNING
        updates = [u async for u in client.watch_job(first.id, timeout=2.0)]
        assert updates[-1].state is AgentJobState.SUCCEEDED and updates[-1].snapshot_ids
        assert await client.get_job(first.id) == updates[-1]

    with_agent(agent, test)


def test_a_failed_agent_job_carries_the_agents_error():
    agent = FakeAgent("kvm-1", job_seconds=0.0, outcome="failed")

    async def test(client: AgentClient) -> None:
        job = await client.create_snapshot("i-2-10-VM", idempotency_key="k-1")
        ended = [u async for u in client.watch_job(job.id, timeout=2.0)][-1]
        assert ended.state is AgentJobState.FAILED
        assert ended.error == f"agent job {job.id}: INTERNAL/RBD_FAILED: rbd said no"

    with_agent(agent, test)


def tls_agent(directory: Path) -> tuple[grpc.ServerCredentials, TlsFiles, TlsFiles]:
    """Server credentials requiring a client certificate of the test CA, the controller's
    files, and a stranger's (its certificate from another CA)."""
    ca = make_ca(directory, "test-ca")
    server_key, server_cert = make_cert(directory, ca, "agent", "IP:127.0.0.1,DNS:localhost")
    key, cert = make_cert(directory, ca, "controller", "DNS:controller")
    other_key, other_cert = make_cert(
        directory, make_ca(directory, "other-ca"), "stranger", "DNS:controller"
    )
    credentials = grpc.ssl_server_credentials(
        [(server_key.read_bytes(), server_cert.read_bytes())],
        root_certificates=ca[1].read_bytes(),
        require_client_auth=True,
    )
    return credentials, TlsFiles(ca[1], cert, key), TlsFiles(ca[1], other_cert, other_key)


def test_mutual_tls_with_the_controllers_certificate_and_no_other(tmp_path):
    credentials, ours, strangers = tls_agent(tmp_path)

    async def main() -> None:
        servers = FakeAgentServer()
        endpoint = await servers.start(FakeAgent("kvm-1"), credentials)
        client = AgentClient(endpoint, ours, call_timeout=5.0)
        stranger = AgentClient(endpoint, strangers, call_timeout=5.0)
        try:
            assert (await client.host_info()).hostname == "kvm-1"
            with pytest.raises(AgentUnavailable):  # the handshake fails: no connection
                await stranger.host_info()
        finally:
            await client.close()
            await stranger.close()
            await servers.stop()

    asyncio.run(main())
