"""A zone for the dispatcher's unit tests: CloudStack's inventory as plain records the test
changes at will, a fake agent per host on a real grpc.aio server, and a SQLite store with a
leader lease."""

from __future__ import annotations

import dataclasses
from datetime import UTC, datetime
from pathlib import Path

from controller.agents import AgentClient, AgentPool
from controller.dispatch import DispatchConfig, Dispatcher, Outcome
from controller.inventory import Host, InventorySnapshot, StoragePool, VirtualMachine, Volume, Zone
from controller.store import Job, JobKind, JobSpec, Lease, Store
from tests.grpc_fake_agent import FakeAgent, FakeAgentServer

ZONE = "zone-1"
FAST = DispatchConfig(
    call_timeout=2.0,
    health_interval=0.0,
    health_retry=0.0,
    skip_delay=0.0,
    fresh_within=0.0,  # every check reads the test's inventory as it is now
    backoff_base=0.001,
    backoff_max=0.002,
    poll_interval=0.01,
)


class FakeInventory:
    """What CloudStack says, read fresh by every `refresh`."""

    def __init__(self) -> None:
        self.hosts: dict[str, Host] = {}
        self.pools: dict[str, StoragePool] = {
            "nfs-1": StoragePool(
                "nfs-1", "nfs-1", "NetworkFilesystem", "/mnt/nfs-1", "", ZONE, "Up", "CLUSTER"
            ),
            "nfs-2": StoragePool(
                "nfs-2", "nfs-2", "NetworkFilesystem", "/mnt/nfs-2", "", ZONE, "Up", "CLUSTER"
            ),
            "rbd-1": StoragePool("rbd-1", "rbd-1", "RBD", "rbd", "", ZONE, "Up", "ZONE"),
        }
        self.vms: dict[str, VirtualMachine] = {}
        self.volumes: dict[str, Volume] = {}
        self.refreshes = 0

    async def refresh(self) -> InventorySnapshot:
        self.refreshes += 1
        return InventorySnapshot(
            zones={ZONE: Zone(ZONE, ZONE)},
            hosts=dict(self.hosts),
            pools=dict(self.pools),
            vms=dict(self.vms),
            volumes=dict(self.volumes),
            fetched_at=datetime.now(UTC),
        )

    def add_host(self, name: str) -> Host:
        host = Host(name, name, "Up", "Enabled", ZONE, "127.0.0.1", "KVM")
        self.hosts[name] = host
        return host

    def set_host(self, name: str, state: str, resource_state: str = "Enabled") -> None:
        self.hosts[name] = dataclasses.replace(
            self.hosts[name], state=state, resource_state=resource_state
        )

    def add_vm(
        self, name: str, host: str | None, pool: str = "nfs-1", state: str = "Running"
    ) -> VirtualMachine:
        vm = VirtualMachine(name, name, f"i-{name}", state, host, host, ZONE)
        self.vms[name] = vm
        root = f"{name}-root"
        self.volumes[root] = Volume(
            root, root, "ROOT", "Ready", name, 0, pool, pool, f"{root}.qcow2", None, 1 << 30, ZONE
        )
        return vm

    def set_volume(self, volume_id: str, state: str) -> None:
        self.volumes[volume_id] = dataclasses.replace(self.volumes[volume_id], state=state)

    def set_vm(self, name: str, **changes: object) -> None:
        self.vms[name] = dataclasses.replace(self.vms[name], **changes)  # type: ignore[arg-type]


class DispatchZone:
    """Hosts with their fake agents, the inventory, the store and a dispatcher."""

    def __init__(self, tmp_path: Path, hosts: tuple[str, ...], config: DispatchConfig) -> None:
        self.inventory = FakeInventory()
        self.agents = {name: FakeAgent(name) for name in hosts}
        for name in hosts:
            self.inventory.add_host(name)
        self.servers = FakeAgentServer()
        self.store = Store.open(f"sqlite:///{tmp_path / 'controller.db'}")
        lease = self.store.leases.acquire("controller", "test", duration=120)
        assert lease is not None
        self.lease: Lease | None = lease
        self.config = config
        self.pool: AgentPool | None = None
        self.dispatcher: Dispatcher | None = None

    async def __aenter__(self) -> DispatchZone:
        for agent in self.agents.values():
            await self.servers.start(agent)
        endpoints = self.servers.endpoints
        self.pool = AgentPool(lambda host: endpoints[host.name], None, call_timeout=2.0)
        self.dispatcher = Dispatcher(
            self.store, self.inventory, self.pool, lambda: self.lease, self.config
        )
        return self

    async def __aexit__(self, *exc: object) -> None:
        if self.pool is not None:
            await self.pool.close()
        await self.servers.stop()
        self.store.close()

    def job(self, vm: str, **options: object) -> Job:
        host = self.inventory.vms[vm].host_id or "kvm-1"
        return self.store.jobs.create(JobSpec(JobKind.SNAPSHOT, host, vm_id=vm, **options))  # type: ignore[arg-type]

    def client(self, host: str) -> AgentClient:
        assert self.pool is not None
        return self.pool.client(self.inventory.hosts[host])

    async def once(self) -> list[Outcome]:
        assert self.dispatcher is not None
        return await self.dispatcher.run_once()

    async def settle(self, passes: int = 20) -> list[Outcome]:
        """Passes until no job is left unfinished (or `passes` ran); every outcome in order."""
        outcomes: list[Outcome] = []
        for _ in range(passes):
            outcomes += await self.once()
            if all(job.state.final for job in self.store.jobs.find()):
                break
        return outcomes
