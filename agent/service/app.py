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

from agent.operations import group, recovery
from agent.operations.services import Services
from agent.service.executor import JobExecutor
from agent.service.servicer import AgentServicer
from agent.settings import Settings
from hostsnap.agent.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name
MAX_CONCURRENT_RPCS = 256
# Calls still open on SIGTERM (job watchers) get this long before they are cut.
STREAM_GRACE_SECONDS = 5.0


def _add_health_and_reflection(server: grpc.aio.Server) -> Any:
    """Returns the health servicer, if there is one (to report NOT_SERVING on the way out)."""
    checker = None
    # Optional: Debian 12 packages neither grpcio-health-checking nor grpcio-reflection.
    try:
        from grpc_health.v1 import health, health_pb2_grpc

        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
    except ImportError:
        log.warning("grpcio-health-checking is not installed: no gRPC health service")
    try:
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), server)
    except ImportError:
        log.warning("grpcio-reflection is not installed: no server reflection")
    return checker


async def _set_health(checker: Any, serving: bool) -> None:
    if checker is None:
        return
    from grpc_health.v1 import health_pb2

    state = (
        health_pb2.HealthCheckResponse.SERVING
        if serving
        else health_pb2.HealthCheckResponse.NOT_SERVING
    )
    for name in (SERVICE_NAME, ""):
        await checker.set(name, state)


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
        credentials = grpc.ssl_server_credentials(
            [(Path(tls.key).read_bytes(), Path(tls.cert).read_bytes())],
            root_certificates=Path(tls.client_ca).read_bytes(),
            require_client_auth=True,
        )
        if server.add_secure_port(listen.tcp, credentials) == 0:
            raise OSError(f"cannot listen on {listen.tcp}")


async def serve(settings: Settings) -> None:
    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    svc = Services.open(settings.agent, settings.admission)
    for outcome in await asyncio.to_thread(recovery.recover, svc):
        log.warning("recovered job %s (%s): %s", outcome.job_id, outcome.state, outcome.detail)
    executor = JobExecutor(settings.limits.job_workers, svc.cancellations.request)
    limit = settings.limits.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ],
        maximum_concurrent_rpcs=MAX_CONCURRENT_RPCS,
    )
    if settings.listen.metrics:
        from agent.service.metrics import serve_metrics

        serve_metrics(svc, settings.listen.metrics)
    agent_pb2_grpc.add_AgentServiceServicer_to_server(
        AgentServicer(svc, settings, executor), server
    )
    checker = _add_health_and_reflection(server)
    _listen(server, settings)
    umask = os.umask(0o077)  # the socket is made root-only from the start
    try:
        await server.start()
    finally:
        os.umask(umask)
    await _set_health(checker, serving=True)
    log.info(
        "serving on %s", ", ".join(filter(None, [settings.listen.unix_socket, settings.listen.tcp]))
    )

    await stopping.wait()
    log.info("stopping: no new calls; running jobs stop at their next safe point")
    executor.cancel_running()
    # No guest stays frozen through the shutdown: the group members' jobs then fail and undo.
    await asyncio.to_thread(group.release_all, svc, "agent shutdown")
    await _set_health(checker, serving=False)
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
