"""Answers and refusals of a real CloudStack that the client and the controller must meet, as
the simulator reproduces them: control characters refused before a command runs, tag values
kept printable and never empty, Destroyed snapshots never listed, a volume on no pool named
"none"."""

from __future__ import annotations

import json
import urllib.error
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote, urlencode

import pytest

from controller.cloudstack import (
    CloudStackClient,
    CloudStackInvalidRequest,
)
from controller.cloudstack.signing import signed_params
from controller.inventory import Inventory
from controller.reconcile.tags import CONSISTENCY, snapshot_tags
from tests.cloudstack_sim import CloudStackSimulator, Volume
from tests.cloudstack_sim.world import Snapshot
from tests.unit import cloudstack_support
from tests.unit.cloudstack_support import run


@pytest.fixture
def sim() -> Iterator[CloudStackSimulator]:
    with CloudStackSimulator() as simulator:
        simulator.jobs.pending_polls = 0
        yield simulator


def client_for(sim: CloudStackSimulator) -> CloudStackClient:
    return cloudstack_support.client_for(sim, job_poll_interval=0.01)


def raw_get(sim: CloudStackSimulator, params: dict[str, str]) -> tuple[int, dict[str, Any]]:
    """A correctly signed GET that no client check stands in front of."""
    signed = signed_params(
        {**params, "response": "json"},
        api_key=sim.api_key,
        secret_key=sim.secret_key,
        now=datetime.now(UTC),
        expires_in=timedelta(minutes=5),
    )
    url = f"{sim.url}?{urlencode(signed, quote_via=quote)}"
    try:
        with urllib.request.urlopen(url, timeout=5) as answer:
            return answer.status, json.loads(answer.read())
    except urllib.error.HTTPError as refused:
        return refused.code, json.loads(refused.read())


@pytest.mark.parametrize("character", ["\x00", "\x07", "\t", "\x1b", "\x7f"])
def test_a_control_character_in_any_value_is_refused_with_431(sim, character):
    status, body = raw_get(sim, {"command": "listVolumes", "keyword": f"a{character}b"})

    assert status == 431
    error = body["listvolumesresponse"]
    assert error["errorcode"] == 431
    assert error["errortext"].endswith("non-printable characters for parameter keyword")


@pytest.mark.parametrize("character", ["\n", "\r"])
def test_line_feed_and_carriage_return_are_accepted(sim, character):
    status, _ = raw_get(sim, {"command": "listVolumes", "keyword": f"a{character}b"})

    assert status == 200


def test_the_client_refuses_control_characters_without_sending_them(sim):
    client = client_for(sim)

    with pytest.raises(CloudStackInvalidRequest) as refused:
        run(lambda: client.request("listVolumes", {"name": "disk\x07"}))

    assert "name" in str(refused.value)
    assert sim.calls("listVolumes") == []


@pytest.mark.parametrize(
    ("consistency", "written"),
    [("application\x07", "application"), ("", "unknown"), ("\x1b\t", "unknown")],
)
def test_snapshot_tags_are_values_cloudstack_accepts(sim, consistency, written):
    client = client_for(sim)
    volume: Volume = sim.world.named(sim.world.volumes, "spare-1")
    tags = snapshot_tags(datetime(2026, 1, 2, tzinfo=UTC), consistency)

    run(lambda: client.create_tags("Volume", [volume.id], tags))

    assert tags[CONSISTENCY] == written
    assert {t.key: t.value for t in sim.world.tags}[CONSISTENCY] == written


def test_list_snapshots_never_lists_destroyed_ones(sim):
    root: Volume = sim.world.named(sim.world.volumes, "ROOT-10")
    sim.world.add(Snapshot("gone", root, state="Destroyed"))
    sim.world.add(Snapshot("going", root, state="Destroying"))

    names = [s["name"] for s in run(lambda: client_for(sim).list_all("listSnapshots"))]

    assert sorted(names) == ["going", "web-1-before-upgrade"]


def test_a_volume_on_no_pool_is_named_none_by_cloudstack_and_has_no_pool_here(sim):
    zone = sim.world.named(sim.world.zones, "zone-1")
    sim.world.add(Volume("allocated-1", zone, "DATADISK", "Allocated", None, None))

    listed = run(lambda: client_for(sim).list_all("listVolumes", {"name": "allocated-1"}))
    inventory = run(lambda: Inventory(client_for(sim)).refresh())

    assert [(v.get("storage"), v.get("storageid")) for v in listed] == [("none", None)]
    volume = next(v for v in inventory.volumes.values() if v.name == "allocated-1")
    assert (volume.pool_id, volume.pool_name) == (None, None)


def test_list_virtual_machines_matches_a_name_as_a_substring(sim):
    names = run(
        lambda: client_for(sim).list_all("listVirtualMachines", {"listall": "true", "name": "-1"})
    )

    assert sorted(vm["name"] for vm in names) == ["batch-1", "db-1", "web-1"]
