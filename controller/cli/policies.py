"""`policies`, `plan` and `run POLICY`."""

from __future__ import annotations

import argparse
import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from controller import policies, store
from controller.cli import CommandError, options
from controller.cli.output import as_json, table, when
from controller.cli.policy_args import new_policy
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
    add.add_argument(
        "--backup", metavar="TARGET", help="back each snapshot up to this agents' backup target"
    )
    add.add_argument(
        "--keep-backups", type=int, metavar="N", help="backups kept per volume (default: all)"
    )
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
        policy = db.policies.create(new_policy(args))
        print(
            as_json(_listed(policy)) if args.json else f"policy {policy.name} added ({policy.id})"
        )
        return 0
    if args.action == "delete":
        db.policies.delete(_policy(db, args.name).id)
        print(as_json({"deleted": args.name}) if args.json else f"policy {args.name} deleted")
        return 0
    stored = db.policies.all()
    if args.json:
        print(as_json([_listed(p) for p in stored]))
        return 0
    rows = []
    backing_up = any(p.backup_target for p in stored)
    for p in stored:
        schedule = p.policy.schedule.describe() if p.policy else f"unusable: {p.problem}"
        selects = " ".join(f"{s.kind}={s.key + '=' if s.key else ''}{s.value}" for s in p.selectors)
        row = [p.name, schedule, p.max_snaps, p.quiesce, selects, "yes" if p.enabled else "no"]
        rows.append(row + ([_backups(p)] if backing_up else []))
    headers = ["name", "schedule", "maxsnaps", "quiesce", "selects", "enabled"]
    print(table(headers + (["backup"] if backing_up else []), rows))
    return 0


async def plan_command(parts: Parts, args: argparse.Namespace) -> int:
    runner = PolicyRunner(parts.store)
    inventory = await parts.inventory.refresh()
    chosen, problems = runner.stored_policies()
    facts = await read_facts(parts.cloudstack, chosen)
    plan = runner.plan(inventory, datetime.now(UTC), facts, await read_caps(parts.cloudstack))
    if args.json:
        print(as_json({"plan": plan, "unplannable": problems}))
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
    for problem in problems:
        print(problem)
    return 0


async def run_command(parts: Parts, args: argparse.Namespace) -> int:
    stored = _policy(parts.store, args.policy)
    try:
        policy = stored.usable()
    except policies.PolicyError as e:
        raise CommandError(f"policy {stored.name} cannot run: {e}") from None
    inventory = await parts.inventory.refresh()
    now = datetime.now(UTC).replace(microsecond=0)
    facts = await read_facts(parts.cloudstack, [policy])
    caps = await read_caps(parts.cloudstack)
    (planned,) = policies.plan([policy], inventory, now, facts=facts, caps=caps).policies
    if planned.problems:
        raise CommandError(f"policy {stored.name} cannot run: {'; '.join(planned.problems)}")
    if not planned.runs:
        raise CommandError(f"policy {stored.name} selects no volume that can be snapshotted now")
    started = PolicyRunner(parts.store).start(planned, now, inventory)
    leader = parts.store.leases.info(parts.lease_config().name)
    if not args.json:
        print(f"run {started.run.id} of policy {stored.name}: {len(started.jobs)} jobs")
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


def _policy(db: store.Store, name: str) -> store.StoredPolicy:
    found = db.policies.by_name(name)
    if found is None:
        try:
            found = db.policies.get(name)
        except store.NotFound:
            raise CommandError(f"no policy {name!r}") from None
    return found


def _backups(p: store.StoredPolicy) -> str:
    if not p.backup_target:
        return "-"
    kept = "all" if p.keep_backups is None else str(p.keep_backups)
    return f"{p.backup_target} (keep {kept})"


def _listed(p: store.StoredPolicy) -> dict[str, Any]:
    """A policy as `policies --json` prints it: as stored, whether or not it can be planned."""
    schedule: dict[str, Any] = {"timezone": p.timezone}
    if p.schedule_kind == "cron":
        schedule["expression"] = p.schedule
    else:
        schedule |= {"interval_type": p.interval_type, "schedule": p.schedule}
    return {
        "id": p.id,
        "name": p.name,
        "schedule": schedule,
        "max_snaps": p.max_snaps,
        "quiesce": p.quiesce,
        "selectors": [{"kind": s.kind, "value": s.value, "key": s.key} for s in p.selectors],
        "enabled": p.enabled,
        "created_at": p.created_at,
        "updated_at": p.updated_at,
        # Only when set: the form of the releases before stays as it was.
        **({"backup_target": p.backup_target} if p.backup_target else {}),
        **({"keep_backups": p.keep_backups} if p.keep_backups is not None else {}),
    }
