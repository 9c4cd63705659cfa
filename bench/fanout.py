"""Fan-out of one policy run: 1,000 simulated hosts x 10 volumes, served by lightweight fake
agents speaking the real proto (bench.fake_agent_fleet: one grpc.aio server and port per
host, in separate processes), dispatched by the real controller Dispatcher from a real Store
(SQLite in a temporary directory, or --store-url) under a leader lease.

The bound: the agents run one mutating job per host at once and each job takes d seconds, so
a host with v volumes needs at least ceil(v / per_host) * d. The per-host limit is the one
that binds: per_pool and total are set to the number of hosts, which the per-host places
never let them reach. The headline ratio is the time from the dispatcher's start until every
job of the run is final, over that bound; the controller's CPU (user + system of this
process, every thread) and its peak RSS are measured beside it. Goal: ratio <= 1.2 and under
500 MB. Any host that ran more jobs at once than the agents allow, or any job that did not
succeed, fails the bench (after the report is written).

Dispatcher settings: DispatchConfig's defaults but for the limits above (a pass takes in up to
`batch` jobs beyond those it has in hand). `--profile` writes a cProfile of the controller's
event loop."""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import math
import resource
import statistics
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import psutil
import sqlalchemy as sa

from bench.fake_agent_fleet import FleetProcesses
from bench.fanout_zone import StaticInventory, build_zone, create_run
from bench.report import RESULTS_DIR, write_report
from controller.agents import AgentPool
from controller.dispatch import DispatchConfig, Dispatcher
from controller.inventory import InventorySnapshot
from controller.store import JobState, Lease, Store
from controller.store.schema import jobs as jobs_table

GOAL_RATIO = 1.2
GOAL_RSS_MB = 500.0
FINAL = [s.value for s in JobState if s.final]


class FanoutFailed(RuntimeError):
    """A per-host limit was broken, or a job of the run did not succeed."""


@dataclass(frozen=True)
class Options:
    hosts: int = 1000
    volumes: int = 10  # per host: one VM each, one ROOT volume, one job
    job_seconds: float = 0.5
    fleets: int = 2  # processes serving the fake agents
    per_host: int = 1  # the dispatcher's per-host limit
    agent_limit: int = 1  # jobs a host's agent may run at once: more is a violation
    per_pool: int | None = None  # None: hosts x per_host (never binds)
    total: int | None = None  # None: hosts x per_host (never binds)
    batch: int = DispatchConfig.batch  # pending jobs a pass takes in beyond those in hand
    poll_interval: float = DispatchConfig.poll_interval
    store_url: str | None = None  # default: SQLite in a temporary directory
    timeout: float = 900.0  # stop waiting for the run after this long
    profile: Path | None = None  # cProfile of the controller's event loop during dispatch
    results_dir: Path = RESULTS_DIR
    name: str = "fanout"

    def config(self) -> DispatchConfig:
        return DispatchConfig(
            per_host=self.per_host,
            per_pool=self.per_pool or self.hosts * self.per_host,
            total=self.total or self.hosts * self.per_host,
            batch=self.batch,
            poll_interval=self.poll_interval,
        )

    @property
    def bound(self) -> float:
        return math.ceil(self.volumes / self.per_host) * self.job_seconds


QUICK = Options(
    hosts=5, volumes=3, job_seconds=0.05, fleets=1, poll_interval=0.05, name="fanout_quick"
)


@dataclass
class Dispatched:
    elapsed: float  # from the dispatcher's start until every job was final (or the timeout)
    started_at: float  # monotonic, comparable with the fleet's times (one clock per machine)
    final: int
    cpu_seconds: float  # this process, all threads, during dispatch, less the bench's own
    monitor_cpu_seconds: float  # the bench's polls of the store for the count of final jobs
    peak_rss_mb: float  # sampled during dispatch
    rss_before_mb: float
    inventory_refreshes: int
    samples: list[tuple[float, int]] = field(default_factory=list)  # (seconds, final jobs)


def _count_final(store: Store, run_id: str) -> tuple[int, float]:
    """The run's final jobs, and the CPU seconds this thread spent counting them."""
    cpu = time.thread_time()
    query = sa.select(sa.func.count()).where(
        jobs_table.c.run_id == run_id, jobs_table.c.state.in_(FINAL)
    )
    with store.engine.connect() as conn:
        final = int(conn.execute(query).scalar_one())
    return final, time.thread_time() - cpu


def _cpu(proc: psutil.Process) -> float:
    times = proc.cpu_times()
    return float(times.user + times.system)


async def dispatch(
    store: Store,
    inventory: InventorySnapshot,
    endpoints: dict[str, str],
    lease: Lease,
    options: Options,
    run_id: str,
    expected: int,
) -> Dispatched:
    config = options.config()
    source = StaticInventory(inventory)
    pool = AgentPool(lambda host: endpoints[host.name], None, call_timeout=config.call_timeout)
    dispatcher = Dispatcher(store, source, pool, lambda: lease, config)
    me = psutil.Process()
    stop = asyncio.Event()
    rss_before = me.memory_info().rss
    peak_rss, final, monitor_cpu = rss_before, 0, 0.0
    every = min(0.25, max(0.01, options.bound / 50))  # the count costs ~3 ms at 10,000 jobs
    samples: list[tuple[float, int]] = []
    profiler = cProfile.Profile() if options.profile else None
    if profiler is not None:
        profiler.enable()
    cpu_before, started = _cpu(me), time.monotonic()
    runner = asyncio.create_task(dispatcher.run(stop))
    try:
        while final < expected and time.monotonic() - started < options.timeout:
            await asyncio.sleep(every)
            peak_rss = max(peak_rss, me.memory_info().rss)
            final, spent = await asyncio.to_thread(_count_final, store, run_id)
            monitor_cpu += spent
            samples.append((round(time.monotonic() - started, 3), final))
        elapsed, cpu = time.monotonic() - started, _cpu(me) - cpu_before - monitor_cpu
    finally:
        if profiler is not None:
            profiler.disable()
            assert options.profile is not None
            profiler.dump_stats(options.profile)
        stop.set()
        try:
            await asyncio.wait_for(runner, timeout=30)
        finally:
            await pool.close()
    return Dispatched(
        elapsed,
        started,
        final,
        cpu,
        monitor_cpu,
        peak_rss / 2**20,
        rss_before / 2**20,
        source.refreshes,
        samples,
    )


def host_figures(
    stats: dict[str, dict[str, Any]], started: float, options: Options
) -> dict[str, Any]:
    """What the agents saw: when each host started and ended, and its idle time between jobs."""
    firsts = [s["first_start"] - started for s in stats.values() if s["first_start"] is not None]
    ends = [s["last_end"] - started for s in stats.values() if s["last_end"] is not None]
    busy = options.volumes * options.job_seconds
    idle = [
        s["last_end"] - s["first_start"] - busy
        for s in stats.values()
        if s["first_start"] is not None and s["last_end"] is not None
    ]
    calls: dict[str, int] = {}
    for s in stats.values():
        for rpc, n in s["calls"].items():
            calls[rpc] = calls.get(rpc, 0) + n

    def spread(values: list[float]) -> dict[str, float]:
        if not values:
            return {}
        ordered = sorted(values)
        return {
            "min": round(ordered[0], 3),
            "median": round(statistics.median(ordered), 3),
            "p90": round(ordered[int(0.9 * (len(ordered) - 1))], 3),
            "max": round(ordered[-1], 3),
        }

    return {
        "first_job_start_s": spread(firsts),
        "last_job_end_s": spread(ends),
        "idle_between_jobs_s": spread(idle),
        "calls": calls,
    }


def binding_limit(options: Options) -> str:
    config = options.config()
    most = options.hosts * options.per_host  # jobs at once the per-host places allow
    if min(config.per_pool, config.total) >= most:
        return (
            f"per_host={config.per_host}; per_pool={config.per_pool} and total={config.total} "
            f"are never reached while per_host holds (at most {most} jobs at once)"
        )
    return (
        f"per_host={config.per_host}, but per_pool={config.per_pool} or total={config.total} "
        f"is below the {most} jobs at once per_host allows: the bound is not reachable"
    )


def violations(stats: dict[str, dict[str, Any]], limit: int) -> dict[str, int]:
    """Hosts whose agent ran more than `limit` jobs at once, with how many it ran."""
    return {h: s["most_running"] for h, s in stats.items() if s["most_running"] > limit}


def run(options: Options) -> Path:
    zone = build_zone(options.hosts, options.volumes)
    expected = options.hosts * options.volumes
    with tempfile.TemporaryDirectory(prefix="bench-fanout-") as tmp:
        workdir = Path(tmp)
        url = options.store_url or f"sqlite:///{workdir / 'controller.db'}"
        store = Store.open(url)
        fleet = FleetProcesses(zone.layout, options.job_seconds, options.fleets, workdir)
        try:
            lease = store.leases.acquire("controller", "bench-fanout", duration=3600)
            assert lease is not None, "another holder has the lease"
            made = time.monotonic()
            jobs = create_run(store, zone.inventory, job_timeout=options.timeout + 600)
            creating = time.monotonic() - made
            run_id = jobs[0].run_id or ""
            fleet_cpu_before = fleet.cpu_seconds()
            done = asyncio.run(
                dispatch(store, zone.inventory, fleet.endpoints, lease, options, run_id, expected)
            )
            fleet_cpu = fleet.cpu_seconds() - fleet_cpu_before
            stats = fleet.stats()
            ended = store.jobs.find(run_id=run_id)
        finally:
            fleet.stop()
            store.close()
    return report(options, done, stats, ended, creating, fleet_cpu)


def report(
    options: Options,
    done: Dispatched,
    stats: dict[str, dict[str, Any]],
    ended: list[Any],
    creating: float,
    fleet_cpu: float,
) -> Path:
    expected = options.hosts * options.volumes
    states: dict[str, int] = {}
    for job in ended:
        states[job.state.value] = states.get(job.state.value, 0) + 1
    broken = violations(stats, options.agent_limit)
    lifetime_rss_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    ratio = done.elapsed / options.bound
    goal_met = ratio <= GOAL_RATIO and lifetime_rss_mb < GOAL_RSS_MB and not broken
    figures = host_figures(stats, done.started_at, options)
    path = write_report(
        options.name,
        ratio=ratio,
        goal=f"time to dispatch the run / per-host bound; goal <= {GOAL_RATIO}, "
        f"controller peak RSS < {GOAL_RSS_MB:.0f} MB",
        measured={
            "hosts": options.hosts,
            "volumes_per_host": options.volumes,
            "jobs": expected,
            "job_seconds": options.job_seconds,
            "dispatch_s": round(done.elapsed, 3),
            "jobs_final": done.final,
            "job_states": states,
            "jobs_per_s": round(done.final / done.elapsed, 1),
            "controller_cpu_s": round(done.cpu_seconds, 3),
            "controller_cpu_ms_per_job": round(1000 * done.cpu_seconds / max(1, done.final), 3),
            "bench_monitor_cpu_s": round(done.monitor_cpu_seconds, 3),
            "controller_peak_rss_mb": round(lifetime_rss_mb, 1),
            "controller_peak_rss_during_dispatch_mb": round(done.peak_rss_mb, 1),
            "controller_rss_before_dispatch_mb": round(done.rss_before_mb, 1),
            "goal_met": goal_met,
            "per_host_violations": broken,
            "agent_jobs_started": sum(s["started"] for s in stats.values()),
            "repeated_keys": sum(s["repeated_keys"] for s in stats.values()),
            "agents": figures,
            "fleet_cpu_s": round(fleet_cpu, 3),
            "fleet_processes": options.fleets,
            "machine_cores": psutil.cpu_count(),
            "creating_jobs_s": round(creating, 3),
            "inventory_refreshes": done.inventory_refreshes,
            "progress": done.samples[:: max(1, len(done.samples) // 40)],
            "dispatch_config": asdict(options.config()),
            "store": "sqlite (temporary file)" if options.store_url is None else "given URL",
        },
        anchor={
            "bound_s": options.bound,
            "bound": f"ceil({options.volumes} volumes / per_host {options.per_host}) x "
            f"{options.job_seconds} s per job",
            "binding_limit": binding_limit(options),
            "agent_limit": options.agent_limit,
        },
        results_dir=options.results_dir,
    )
    print(
        f"fanout: {options.hosts} hosts x {options.volumes} volumes, {options.job_seconds} s jobs: "
        f"{done.final}/{expected} final in {done.elapsed:.2f} s, bound {options.bound:.2f} s, "
        f"ratio {ratio:.2f} (goal <= {GOAL_RATIO}); controller CPU {done.cpu_seconds:.1f} s, "
        f"peak RSS {lifetime_rss_mb:.0f} MB (goal < {GOAL_RSS_MB:.0f}); "
        f"fleet CPU {fleet_cpu:.1f} s; per-host violations {len(broken)}"
    )
    if broken:
        raise FanoutFailed(f"per-host limit {options.agent_limit} broken on {broken}")
    if done.final < expected:
        raise FanoutFailed(
            f"timed out: {done.final} of {expected} jobs final after {done.elapsed:.0f} s"
        )
    if states.get(JobState.SUCCEEDED.value, 0) != expected:
        raise FanoutFailed(f"not every job succeeded: {states} of {expected}")
    return path


def parse(argv: list[str] | None) -> Options:
    parser = argparse.ArgumentParser(prog="python -m bench fanout", description=__doc__)
    parser.add_argument("--quick", action="store_true", help="5 hosts x 3 volumes, 0.05 s jobs")
    parser.add_argument("--hosts", type=int)
    parser.add_argument("--volumes", type=int, help="per host")
    parser.add_argument("--job-seconds", type=float)
    parser.add_argument("--fleets", type=int, help="fake agent processes")
    parser.add_argument("--per-host", type=int, help="the dispatcher's per-host limit")
    parser.add_argument("--agent-limit", type=int, help="jobs at once an agent allows")
    parser.add_argument("--per-pool", type=int, help="default: hosts x per-host")
    parser.add_argument("--total", type=int, help="default: hosts x per-host")
    parser.add_argument("--batch", type=int, help="pending jobs a pass takes in")
    parser.add_argument("--poll-interval", type=float)
    parser.add_argument("--store-url", help="e.g. mysql+pymysql://user:pw@host/db")
    parser.add_argument("--timeout", type=float)
    parser.add_argument("--profile", type=Path, help="write a cProfile of the dispatch here")
    parser.add_argument("--results-dir", type=Path)
    parser.add_argument("--name", help="report name (default fanout)")
    args = vars(parser.parse_args(argv))
    base = QUICK if args.pop("quick") else Options()
    given = {k: v for k, v in args.items() if v is not None}
    return Options(**{**asdict(base), **given})


def main(argv: list[str] | None = None) -> Path:
    return run(parse(argv))


if __name__ == "__main__":
    main()
