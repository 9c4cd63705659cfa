"""The controller's parts, built from its settings: one place that knows how they connect."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

from controller.agents import AgentPool, TlsFiles
from controller.agents.pool import endpoint_at_port
from controller.cloudstack import CloudStackClient, CloudStackConfig
from controller.config import ConfigError, Settings
from controller.inventory import Inventory
from controller.store import LeaseConfig, Store


@dataclass
class Parts:
    settings: Settings
    store: Store
    cloudstack: CloudStackClient
    inventory: Inventory
    _agents: AgentPool | None = None

    @property
    def agents(self) -> AgentPool:
        """Made on first use: commands that ask no agent (status, plan) need no credentials."""
        if self._agents is None:
            self._agents = _agent_pool(self.settings)
        return self._agents

    @classmethod
    def build(cls, settings: Settings) -> Parts:
        """Opens the store (migrating its schema) and makes the clients; nothing is called
        yet. Must be called inside the event loop the parts are used on."""
        cs = settings.cloudstack
        cloudstack = CloudStackClient(
            CloudStackConfig(
                cs.url,
                cs.api_key,
                settings.secret_key(),
                timeout=cs.timeout,
                ca_file=cs.ca_file or None,
            )
        )
        inventory = Inventory(
            cloudstack, zone_id=cs.zone_id or None, interval=settings.schedule.inventory_interval
        )
        return cls(settings, Store.open(settings.store.url), cloudstack, inventory)

    def lease_config(self) -> LeaseConfig:
        lease = self.settings.lease
        return LeaseConfig(
            duration=lease.duration,
            renew_interval=lease.renew_interval,
            retry_interval=lease.retry_interval,
            margin=lease.margin,
        )

    async def close(self) -> None:
        if self._agents is not None:
            await self._agents.close()
        self.store.close()


def _agent_pool(settings: Settings) -> AgentPool:
    agents = settings.agents
    tls = None
    if not agents.insecure:
        tls = TlsFiles(
            ca=Path(agents.ca),
            cert=Path(agents.cert),
            key=Path(agents.key),
            server_name=agents.server_name or None,
        )
        for key, path in (("ca", tls.ca), ("cert", tls.cert), ("key", tls.key)):
            if not os.access(path, os.R_OK):
                raise ConfigError(f"[agents] {key}: cannot read {path}")
    return AgentPool(endpoint_at_port(agents.port), tls, call_timeout=agents.call_timeout)
