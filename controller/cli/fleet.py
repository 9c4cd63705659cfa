"""`status`, `hosts`, `groups` and `reconcile`: the zone as the controller sees it."""

from __future__ import annotations

import argparse
import asyncio
from typing import Any

from controller.agents import AgentError
from controller.cli.output import as_json, table
from controller.cloudstack import CloudStackError
from controller.inventory import Host
from controller.parts import Parts
from controller.store import JobState, RunState

AGENT_CHECK_TIMEOUT = 5.0


def add_arguments(commands: Any, common: argparse.ArgumentParser) -> None:
    commands.add_parser("status", parents=[common], help="leader, jobs, runs and CloudStack")
    commands.add_parser("hosts", parents=[common], help="CloudStack's hosts and their agents")


async def status_command(parts: Parts, args: argparse.Namespace) -> int:
    db = parts.store
    lease = db.leases.info(parts.lease_config().name)
    counts = db.jobs.count_by_state()
    running_runs = db.runs.find(state=RunState.RUNNING)
    open_intents = db.intents.open()
    cloudstack: dict[str, Any]
    try:
        inventory = await parts.inventory.refresh()
        cloudstack = {
            "reachable": True,
            "hosts": len(inventory.hosts),
            "vms": len(inventory.vms),
            "volumes": len(inventory.volumes),
            "busy_volumes": len(inventory.busy_volumes()),
        }
    except CloudStackError as e:
        cloudstack = {"reachable": False, "error": str(e)}
    status: dict[str, Any] = {
        "leader": None
        if lease is None or not lease.held
        else {
            "holder": lease.holder,
            "epoch": lease.epoch,
            "expires_in": round(lease.remaining, 1),
        },
        "jobs": {state.value: counts.get(state, 0) for state in JobState},
        "runs_running": len(running_runs),
        "open_intents": len(open_intents),
        "cloudstack": cloudstack,
    }
    if args.json:
        print(as_json(status))
        return 0
    leader = status["leader"]
    print(
        "leader      "
        + (
            f"{leader['holder']} (epoch {leader['epoch']})"
            if leader
            else "none: no controller leads"
        )
    )
    print("jobs        " + ", ".join(f"{k} {v}" for k, v in status["jobs"].items()))
    print(f"runs        {len(running_runs)} running")
    print(f"intents     {len(open_intents)} open (CloudStack may not know a volume's new path)")
    if cloudstack["reachable"]:
        print(
            f"cloudstack  {cloudstack['hosts']} hosts, {cloudstack['vms']} VMs, "
            f"{cloudstack['volumes']} volumes ({cloudstack['busy_volumes']} busy)"
        )
    else:
        print(f"cloudstack  unreachable: {cloudstack['error']}")
    return 0 if cloudstack["reachable"] else 1


async def hosts_command(parts: Parts, args: argparse.Namespace) -> int:
    inventory = await parts.inventory.refresh()
    hosts = sorted(inventory.hosts.values(), key=lambda h: h.name)
    agents = await asyncio.gather(*(_agent_of(parts, h) for h in hosts))
    rows = [
        {
            "id": h.id,
            "name": h.name,
            "state": h.state,
            "resource_state": h.resource_state,
            "address": h.ip_address,
            "vms": len(inventory.vms_on(h.id)),
            "agent": agent,
        }
        for h, agent in zip(hosts, agents, strict=True)
    ]
    if args.json:
        print(as_json(rows))
    else:
        print(
            table(
                ["host", "state", "resource", "address", "vms", "agent"],
                [
                    [r["name"], r["state"], r["resource_state"], r["address"], r["vms"], r["agent"]]
                    for r in rows
                ],
            )
        )
    return 0


async def _agent_of(parts: Parts, host: Host) -> str:
    try:
        info = await parts.agents.client(host).host_info(timeout=AGENT_CHECK_TIMEOUT)
    except AgentError as e:
        return f"unreachable: {e}"
    return f"{info.agent_version} on {info.hostname}"
