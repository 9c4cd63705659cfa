"""The zone bench/fanout dispatches into: hosts Up/Enabled, VMs with one ROOT volume each on
NFS pools, placed on the hosts in a shuffled but fixed order (as an allocator leaves them, so
VM names do not follow hosts), and one policy run's jobs in the store, made the way the policy
runner makes them: a run for the slot, one snapshot job per VM (whole VM: its one volume),
the idempotency key `hostsnap-run/<run>/<vm>`, the intent of each file volume, in the plan's
order (by VM name)."""

from __future__ import annotations

import random
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from types import MappingProxyType

from controller.inventory import Host, InventorySnapshot, StoragePool, VirtualMachine, Volume, Zone
from controller.policies import Policy, Quiesce, Schedule, Selector, TagMatch
from controller.store import IntentSpec, Job, JobKind, JobSpec, Store

ZONE = "zone-fanout"
POOLS = 10  # NFS primary storage pools the volumes are spread over
GIB = 1 << 30

# host name: {domain: [(disk target, image location), ...]}, as bench.fake_agent_fleet takes it
Layout = dict[str, dict[str, list[tuple[str, str]]]]


@dataclass(frozen=True)
class ZonePlan:
    inventory: InventorySnapshot
    layout: Layout


class StaticInventory:
    """CloudStack's answer, the same every time (what reading it costs is not measured)."""

    def __init__(self, snapshot: InventorySnapshot) -> None:
        self.snapshot = snapshot
        self.refreshes = 0

    async def refresh(self) -> InventorySnapshot:
        self.refreshes += 1
        return self.snapshot


def host_name(n: int) -> str:
    return f"kvm-{n:04d}"


def build_zone(hosts: int, vms_per_host: int, seed: int = 1) -> ZonePlan:
    """`hosts` hosts with `vms_per_host` running VMs each, every VM one ROOT volume."""
    pools = [
        StoragePool(
            f"pool-{p}",
            f"primary-{p}",
            "NetworkFilesystem",
            f"/export/primary-{p}",
            "10.0.0.1",
            ZONE,
            "Up",
            "ZONE",
        )
        for p in range(POOLS)
    ]
    host_list = [
        Host(host_name(h), host_name(h), "Up", "Enabled", ZONE, "127.0.0.1", "KVM")
        for h in range(hosts)
    ]
    slots = [h for h in range(hosts) for _ in range(vms_per_host)]
    random.Random(seed).shuffle(slots)
    vms: list[VirtualMachine] = []
    volumes: list[Volume] = []
    layout: Layout = {h.name: {} for h in host_list}
    for n, h in enumerate(slots):
        host = host_list[h]
        vm = VirtualMachine(
            f"vm-{n:06d}", f"vm-{n:06d}", f"i-2-{n + 10}-VM", "Running", host.id, host.name, ZONE
        )
        pool = pools[n % POOLS]
        path = f"vol-{n:06d}"
        volume = Volume(
            f"vol-{n:06d}",
            f"ROOT-{n + 10}",
            "ROOT",
            "Ready",
            vm.id,
            0,
            pool.id,
            pool.name,
            path,
            None,
            8 * GIB,
            ZONE,
        )
        vms.append(vm)
        volumes.append(volume)
        layout[host.name][vm.instance_name] = [("vda", f"/mnt/{pool.id}/{path}")]
    inventory = InventorySnapshot(
        zones=MappingProxyType({ZONE: Zone(ZONE, ZONE)}),
        hosts=MappingProxyType({h.id: h for h in host_list}),
        pools=MappingProxyType({p.id: p for p in pools}),
        vms=MappingProxyType({vm.id: vm for vm in vms}),
        volumes=MappingProxyType({v.id: v for v in volumes}),
        fetched_at=datetime.now(UTC),
    )
    return ZonePlan(inventory, layout)


def create_run(store: Store, inventory: InventorySnapshot, job_timeout: float) -> list[Job]:
    """One policy run covering every volume: its jobs PENDING, in the plan's order."""
    policy = store.policies.create(
        Policy(
            id=str(uuid.uuid4()),
            name=f"fanout-bench-{uuid.uuid4().hex[:8]}",  # a shared --store-url may have one
            schedule=Schedule.cloudstack("HOURLY", "0"),
            max_snaps=7,
            selector=Selector(tags=(TagMatch("bench", "fanout"),)),
            quiesce=Quiesce.PREFERRED,
        )
    )
    slot = datetime.now(UTC).replace(minute=0, second=0, microsecond=0)
    run = store.runs.open(policy.id, slot)
    params = {"quiesce": "preferred", "name": f"policy-{policy.id}-{slot:%Y%m%dT%H%M%SZ}"}
    volumes_of: dict[str, list[Volume]] = {}
    for volume in inventory.volumes.values():
        volumes_of.setdefault(volume.vm_id or "", []).append(volume)
    jobs = []
    for vm in sorted(inventory.vms.values(), key=lambda vm: vm.name):
        volumes = volumes_of.get(vm.id, [])
        intents = tuple(
            IntentSpec(v.id, v.path) for v in volumes if inventory.pools[v.pool_id or ""].is_file
        )
        jobs.append(
            store.jobs.create(
                JobSpec(
                    JobKind.SNAPSHOT,
                    vm.host_id or "",
                    vm_id=vm.id,
                    params=params,
                    run_id=run.id,
                    idempotency_key=f"hostsnap-run/{run.id}/{vm.id}",
                    timeout=job_timeout,
                    intents=intents,
                )
            )
        )
    return jobs
