"""The hostsnap-agent server: recovery first, then the listeners (root-only unix socket, and
TCP with mutual TLS), health and reflection, and a graceful stop on SIGTERM."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
from pathlib import Path

import grpc

from agent.operations import recovery
from agent.operations.services import Services
from agent.service.executor import JobExecutor
from agent.service.servicer import AgentServicer
from agent.settings import Settings
from hostsnap.agent.v1 import agent_pb2, agent_pb2_grpc

log = logging.getLogger(__name__)

SERVICE_NAME = agent_pb2.DESCRIPTOR.services_by_name["AgentService"].full_name


def _add_health_and_reflection(server: grpc.aio.Server) -> None:
    # Optional: Debian 12 packages neither grpcio-health-checking nor grpcio-reflection.
    try:
        from grpc_health.v1 import health, health_pb2, health_pb2_grpc

        checker = health.aio.HealthServicer()
        health_pb2_grpc.add_HealthServicer_to_server(checker, server)
        asyncio.get_running_loop().create_task(
            checker.set(SERVICE_NAME, health_pb2.HealthCheckResponse.SERVING)
        )
        asyncio.get_running_loop().create_task(
            checker.set("", health_pb2.HealthCheckResponse.SERVING)
        )
    except ImportError:
        log.warning("grpcio-health-checking is not installed: no gRPC health service")
    try:
        from grpc_reflection.v1alpha import reflection

        reflection.enable_server_reflection((SERVICE_NAME, reflection.SERVICE_NAME), server)
    except ImportError:
        log.warning("grpcio-reflection is not installed: no server reflection")


def _listen(server: grpc.aio.Server, settings: Settings) -> None:
    listen = settings.listen
    if listen.unix_socket:
        socket_path = Path(listen.unix_socket)
        socket_path.parent.mkdir(parents=True, exist_ok=True)
        socket_path.parent.chmod(0o700)
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
    svc = Services.open(settings.agent)
    for outcome in recovery.recover(svc):
        log.warning("recovered job %s (%s): %s", outcome.job_id, outcome.state, outcome.detail)
    executor = JobExecutor(settings.limits.job_workers)
    limit = settings.limits.max_message_bytes
    server = grpc.aio.server(
        options=[
            ("grpc.max_receive_message_length", limit),
            ("grpc.max_send_message_length", limit),
        ]
    )
    agent_pb2_grpc.add_AgentServiceServicer_to_server(
        AgentServicer(svc, settings, executor), server
    )
    _add_health_and_reflection(server)
    _listen(server, settings)
    await server.start()
    if settings.listen.unix_socket:
        os.chmod(settings.listen.unix_socket, 0o600)
    log.info(
        "serving on %s", ", ".join(filter(None, [settings.listen.unix_socket, settings.listen.tcp]))
    )

    stopping = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stopping.set)
    await stopping.wait()
    log.info("stopping: no new calls; running jobs finish (they thaw and journal as they go)")
    await server.stop(grace=settings.limits.shutdown_grace)
    await asyncio.to_thread(executor.shutdown, svc.cancellations.request)
    svc.close()
    log.info("stopped")
