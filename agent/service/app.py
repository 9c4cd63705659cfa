"""The hostsnap-agent server: recovery first, then the listeners (root-only unix socket, and
TCP with mutual TLS), health and reflection, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path
from typing import Any

import grpc

from agent import thaw_after_exit
from agent.operations import group, recovery
from agent.service.executor import JobExecutor
from agent.service.introspection import add_health_and_reflection, set_health
from agent.service.servicer import AgentServicer
from agent.settings import Settings
from agent.wiring import open_services
from hostsnap.agent.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
MAX_CONCURRENT_RPCS = 256
# Calls still open on SIGTERM (job watchers) get this long before they are cut.
STREAM_GRACE_SECONDS = 5.0


def _socket_directory(socket_path: Path) -> None:
    """The socket's directory is root's alone: made so, or refused when it is not."""
    directory = socket_path.parent
    if not directory.exists():
        directory.mkdir(mode=0o700, parents=True)
        return
    info = directory.stat()
    if info.st_uid != 0 or info.st_mode & 0o022:
        raise OSError(
            f"{directory} must belong to root and not be writable by others to hold the "
            "agent's socket; use a directory of its own such as /run/hostsnap"
        )


def _listen(server: grpc.aio.Server, settings: Settings) -> None:
    listen = settings.listen
    if listen.unix_socket:
        socket_path = Path(listen.unix_socket)
        _socket_directory(socket_path)
        socket_path.unlink(missing_ok=True)
        server.add_insecure_port(f"unix:{socket_path}")
    if listen.tcp and listen.insecure_tcp:
        log.warning("listening on %s WITHOUT TLS (insecure_tcp, development only)", listen.tcp)
        server.add_insecure_port(listen.tcp)
    elif listen.tcp:
        tls = settings.tls
        # The client certificate is required in the handshake, so a client without one (or
        # with one of another CA) is refused there and sees UNAVAILABLE. grpcio has no mode
        # that asks for a certificate and verifies it without requiring it:
        # require_client_auth=False does not ask at all, and no caller would have a name.
        credentials = grpc.ssl_server_credentials(
            [(Path(tls.key).read_bytes(), Path(tls.cert).read_bytes())],
            root_certificates=Path(tls.client_ca).read_bytes(),
            require_client_auth=True,
        )
        if server.add_secure_port(listen.tcp, credentials) == 0:
            raise OSError(f"cannot listen on {listen.tcp}")


def build_server(settings: Settings, servicer: AgentServicer) -> tuple[grpc.aio.Server, Any]:
    """The server with the agent's service, health and reflection on its listeners, not yet
    started; and the health servicer, if there is one."""
    limit = settings.limits.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)
    checker = add_health_and_reflection(server, [SERVICE_NAME])
    _listen(server, settings)
    return server, checker


async def serve(settings: Settings) -> None:
    with thaw_after_exit.agent_lock(settings.agent):
        await _serve(settings)


async def _serve(settings: Settings) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    svc = open_services(settings.agent, settings.admission)
    for outcome in await asyncio.to_thread(recovery.recover, svc):
        log.warning("recovered job %s (%s): %s", outcome.job_id, outcome.state, outcome.detail)
    executor = JobExecutor(settings.limits.job_workers, svc.cancellations.request)
    if settings.listen.metrics:
        from agent.service.metrics import serve_metrics

        serve_metrics(svc, settings.listen.metrics)
    server, checker = build_server(settings, AgentServicer(svc, settings, executor))
    umask = os.umask(0o077)  # the socket is made root-only from the start
    try:
        await server.start()
    finally:
        os.umask(umask)
    await set_health(checker, SERVICE_NAME, serving=True)
    log.info(
        "serving on %s", ", ".join(filter(None, [settings.listen.unix_socket, settings.listen.tcp]))
    )

    await stopping.wait()
    log.info("stopping: no new calls; running jobs stop at their next safe point")
    executor.cancel_running()
    # No guest stays frozen through the shutdown: the group members' jobs then fail and undo.
    await asyncio.to_thread(group.release_all, svc, "agent shutdown")
    await set_health(checker, SERVICE_NAME, serving=False)
    await server.stop(grace=STREAM_GRACE_SECONDS)
    try:
        await asyncio.wait_for(asyncio.to_thread(executor.shutdown), settings.limits.shutdown_grace)
    except TimeoutError:
        log.error(
            "jobs still running after %.0f s: %s; the next start recovers them",
            settings.limits.shutdown_grace,
            ", ".join(sorted(executor.running)),
        )
    if settings.listen.unix_socket:
        Path(settings.listen.unix_socket).unlink(missing_ok=True)
    svc.close()
    log.info("stopped")
