"""One client (one channel) per host's agent, made on first use and kept."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from controller.agents.client import AgentClient
from controller.agents.credentials import TlsFiles
from controller.inventory import Host


def endpoint_at_port(port: int) -> Callable[[Host], str]:
    """The agent listens on the host's CloudStack address at `port`."""
    return lambda host: f"{host.ip_address}:{port}"


class AgentPool:
    def __init__(
        self,
        endpoint_of: Callable[[Host], str],
        tls: TlsFiles | None,
        *,
        call_timeout: float = 30.0,
    ) -> None:
        self._endpoint_of = endpoint_of
        self._tls = tls
        self._call_timeout = call_timeout
        self._clients: dict[str, AgentClient] = {}
        self._retired: list[AgentClient] = []  # clients of endpoints that changed

    def client(self, host: Host) -> AgentClient:
        """The agent client of `host`; a new one when the host's endpoint changed."""
        endpoint = self._endpoint_of(host)
        client = self._clients.get(host.id)
        if client is None or client.endpoint != endpoint:
            if client is not None:
                self._retired.append(client)  # its calls may still run; closed at the end
            client = AgentClient(endpoint, self._tls, call_timeout=self._call_timeout)
            self._clients[host.id] = client
        return client

    async def close(self) -> None:
        clients = [*self._clients.values(), *self._retired]
        self._clients, self._retired = {}, []
        await asyncio.gather(*(c.close() for c in clients), return_exceptions=True)
