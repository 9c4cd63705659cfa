"""`policies`, `plan` and `run POLICY`."""

from __future__ import annotations

import argparse
import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

from controller import policies, store
from controller.cli import CommandError, options
from controller.cli.output import as_json, table, when
from controller.parts import Parts
from controller.runner import PolicyRunner, run_state_of
from controller.runner.facts import read_caps, read_facts


def add_arguments(commands: Any, common: argparse.ArgumentParser) -> None:
    listing = commands.add_parser("policies", parents=[common], help="list, add or delete policies")
    actions = listing.add_subparsers(dest="action")
    nested = options(nested=True)
    add = actions.add_parser("add", parents=[nested], help="add a policy")
    add.add_argument("name")
    when_group = add.add_mutually_exclusive_group(required=True)
    when_group.add_argument(
        "--interval", choices=[t.value for t in policies.IntervalType], help="CloudStack's form"
    )
    when_group.add_argument("--cron", help="five cron fields, e.g. '30 2 * * *'")
    add.add_argument("--schedule", help="with --interval: MM, MM:HH or MM:HH:DD")
    add.add_argument("--timezone", default="UTC", help="an IANA name (default UTC)")
    add.add_argument("--maxsnaps", type=int, required=True, help="snapshots kept per volume")
    add.add_argument("--quiesce", choices=[q.value for q in policies.Quiesce], default="preferred")
    add.add_argument("--vm", action="append", default=[], help="a VM id, name or instance name")
    add.add_argument("--volume", action="append", default=[], help="a volume id")
    add.add_argument("--tag", action="append", default=[], help="key=value on a VM or volume")
    add.add_argument("--account", action="append", default=[], help="an owner's account name")
    add.add_argument("--disabled", action="store_true")
    delete = actions.add_parser("delete", parents=[nested], help="delete a policy")
    delete.add_argument("name")
    commands.add_parser("plan", parents=[common], help="what the policies would run (dry run)")
    run = commands.add_parser("run", parents=[common], help="run a policy now")
    run.add_argument("policy", help="the policy's name or id")
    run.add_argument("--wait", action="store_true", help="until its jobs have ended")
    run.add_argument("--timeout", type=float, default=3600.0, help="seconds to wait at most")


def policies_command(parts: Parts, args: argparse.Namespace) -> int:
    db = parts.store
    if args.action == "add":
        policy = db.policies.create(_new_policy(args))
        print(as_json(policy) if args.json else f"policy {policy.name} added ({policy.id})")
        return 0
    if args.action == "delete":
        db.policies.delete(_policy(db, args.name).id)
        print(as_json({"deleted": args.name}) if args.json else f"policy {args.name} deleted")
        return 0
    stored = db.policies.all()
    if args.json:
        print(as_json(stored))
        return 0
    rows = [
        [
            p.name,
            p.schedule.describe(),
            p.max_snaps,
            p.quiesce,
            p.selector.describe(),
            "yes" if p.enabled else "no",
        ]
        for p in stored
    ]
    print(table(["name", "schedule", "maxsnaps", "quiesce", "selects", "enabled"], rows))
    return 0


async def plan_command(parts: Parts, args: argparse.Namespace) -> int:
    runner = PolicyRunner(parts.store)
    inventory = await parts.inventory.refresh()
    facts = await read_facts(parts.cloudstack, parts.store.policies.all())
    plan = runner.plan(inventory, datetime.now(UTC), facts, await read_caps(parts.cloudstack))
    if args.json:
        print(as_json({"plan": plan}))
        return 0
    rows = [
        [
            p.policy_name,
            "now" if p.due else when(p.when),
            p.schedule,
            p.quiesce,
            p.keep,
            len(p.runs),
            sum(len(r.volumes) for r in p.runs),
            sum(len(v.delete) for r in p.runs for v in r.volumes),
            "; ".join([*p.problems, *p.notes]),
        ]
        for p in plan.policies
    ]
    headers = [
        "policy",
        "runs",
        "schedule",
        "quiesce",
        "keep",
        "vms",
        "volumes",
        "deletes",
        "notes",
    ]
    print(table(headers, rows))
    for p in plan.policies:
        for excluded in p.excluded:
            print(f"{p.policy_name}: left out {excluded}")
    return 0


async def run_command(parts: Parts, args: argparse.Namespace) -> int:
    policy = _policy(parts.store, args.policy)
    inventory = await parts.inventory.refresh()
    now = datetime.now(UTC).replace(microsecond=0)
    facts = await read_facts(parts.cloudstack, [policy])
    caps = await read_caps(parts.cloudstack)
    (planned,) = policies.plan([policy], inventory, now, facts=facts, caps=caps).policies
    if planned.problems:
        raise CommandError(f"policy {policy.name} cannot run: {'; '.join(planned.problems)}")
    if not planned.runs:
        raise CommandError(f"policy {policy.name} selects no volume that can be snapshotted now")
    started = PolicyRunner(parts.store).start(planned, now, inventory)
    leader = parts.store.leases.info(parts.lease_config().name)
    if not args.json:
        print(f"run {started.run.id} of policy {policy.name}: {len(started.jobs)} jobs")
        if leader is None or not leader.held:
            print(
                "no controller leads now: the jobs wait until one does (hostsnap-controller serve)"
            )
    if not args.wait:
        if args.json:
            print(as_json(started))
        return 0
    jobs = await _wait(parts.store, started.run.id, args.timeout)
    state = run_state_of(jobs)
    if args.json:
        print(as_json({"run": started.run, "state": state, "jobs": jobs}))
    else:
        rows = [[j.id, j.vm_id, j.volume_id or "all", j.state, j.error or ""] for j in jobs]
        print(table(["job", "vm", "volume", "state", "error"], rows))
        print(f"run {started.run.id}: {state or 'not ended'}")
    # A job can succeed with a note: CloudStack was not told its volumes' new paths yet.
    noted = [j for j in jobs if j.state is store.JobState.SUCCEEDED and j.error]
    return 0 if state is store.RunState.SUCCEEDED and not noted else 1


async def _wait(db: store.Store, run_id: str, timeout: float) -> list[store.Job]:
    deadline = time.monotonic() + timeout
    while True:
        jobs = await asyncio.to_thread(db.jobs.find, run_id=run_id)
        if run_state_of(jobs) is not None or time.monotonic() >= deadline:
            return jobs
        await asyncio.sleep(1.0)


def _policy(db: store.Store, name: str) -> policies.Policy:
    found = db.policies.by_name(name)
    if found is None:
        try:
            found = db.policies.get(name)
        except store.NotFound:
            raise CommandError(f"no policy {name!r}") from None
    return found


def _new_policy(args: argparse.Namespace) -> policies.Policy:
    try:
        schedule: policies.Schedule
        if args.cron:
            schedule = policies.Schedule.cron(args.cron, args.timezone)
        else:
            if not args.schedule:
                raise CommandError("--interval needs --schedule (MM, MM:HH or MM:HH:DD)")
            schedule = policies.Schedule.cloudstack(args.interval, args.schedule, args.timezone)
        if not (args.vm or args.volume or args.tag or args.account):
            raise CommandError("a policy needs --vm, --volume, --tag or --account")
        selector = policies.Selector(
            vms=tuple(args.vm),
            volumes=tuple(args.volume),
            tags=tuple(policies.TagMatch(*_key_value(t)) for t in args.tag),
            accounts=tuple(args.account),
        )
        return policies.Policy(
            id=str(uuid.uuid4()),
            name=args.name,
            schedule=schedule,
            max_snaps=args.maxsnaps,
            selector=selector,
            quiesce=policies.Quiesce(args.quiesce),
            enabled=not args.disabled,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None


def _key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip() or not value.strip():
        raise CommandError(f"--tag {text!r}: write key=value")
    return key.strip(), value.strip()
