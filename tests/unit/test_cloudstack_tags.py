"""Tags as a real CloudStack keeps them (the simulator follows TaggedResourceManagerImpl,
DeleteTagsCmd and CreateTagsCmd): deleting by key, "nothing to delete" in both of its
release-dependent forms, and replacing a volume's hostsnap tags on either release."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from controller.cloudstack import (
    CloudStackClient,
    CloudStackInvalidRequest,
    CloudStackJobFailed,
)
from controller.reconcile.tags import replace_tags
from tests.cloudstack_sim import CloudStackSimulator, Volume
from tests.unit import cloudstack_support
from tests.unit.cloudstack_support import run

RELEASES = pytest.mark.parametrize("none_found", [530, 431], ids=["4.19+", "older"])


@pytest.fixture
def sim() -> Iterator[CloudStackSimulator]:
    with CloudStackSimulator() as simulator:
        simulator.jobs.pending_polls = 0
        yield simulator


def client_for(sim: CloudStackSimulator) -> CloudStackClient:
    return cloudstack_support.client_for(sim, job_poll_interval=0.01, job_poll_max_interval=0.02)


def spare(sim: CloudStackSimulator) -> Volume:
    volume: Volume = sim.world.named(sim.world.volumes, "spare-1")
    return volume


def tags_of(sim: CloudStackSimulator, volume: Volume) -> dict[str, str]:
    with sim.world.lock:
        found = [t for t in sim.world.tags if t.resource_id == volume.id]
    assert len({t.key.lower() for t in found}) == len(found), "one tag per key"
    return {t.key: t.value for t in found}


def test_a_delete_that_names_an_empty_value_matches_nothing_and_fails_the_job(sim):
    client, volume = client_for(sim), spare(sim)
    run(lambda: client.create_tags("Volume", [volume.id], {"k": "old"}))
    params = {"resourcetype": "Volume", "resourceids": volume.id}
    params |= {"tags[0].key": "k", "tags[0].value": ""}

    with pytest.raises(CloudStackJobFailed) as failed:
        run(lambda: client.execute_async("deleteTags", params))

    assert (failed.value.errorcode, failed.value.errortext) == (530, "Failed to delete tags")
    assert tags_of(sim, volume) == {"k": "old"}


def test_an_older_release_says_431_when_a_delete_matched_nothing(sim):
    sim.api.behaviour.delete_tags_none_found = 431
    client, volume = client_for(sim), spare(sim)

    with pytest.raises(CloudStackJobFailed) as failed:
        run(lambda: client.delete_tags("Volume", [volume.id], ["k"]))

    assert failed.value.errorcode == 431
    assert "Unable to find any tags which conform" in failed.value.errortext


def test_delete_by_key_alone_deletes_whatever_the_value_and_its_case(sim):
    client, volume = client_for(sim), spare(sim)
    run(lambda: client.create_tags("Volume", [volume.id], {"Hostsnap": "x", "keep": "1"}))

    run(lambda: client.delete_tags("Volume", [volume.id], ["hostsnap"]))

    assert tags_of(sim, volume) == {"keep": "1"}
    sent = sim.calls("deleteTags")[-1].params
    assert "tags[0].value" not in sent and sent["tags[0].key"] == "hostsnap"


@RELEASES
def test_replace_tags_replaces_the_values_a_volume_has(sim, none_found):
    sim.api.behaviour.delete_tags_none_found = none_found
    client, volume = client_for(sim), spare(sim)
    run(lambda: client.create_tags("Volume", [volume.id], {"a": "1", "b": "2", "keep": "k"}))

    run(lambda: replace_tags(client, "Volume", volume.id, {"a": "10", "b": "20"}))

    assert tags_of(sim, volume) == {"a": "10", "b": "20", "keep": "k"}


@RELEASES
def test_replace_tags_on_a_volume_without_them_writes_them(sim, none_found):
    sim.api.behaviour.delete_tags_none_found = none_found
    client, volume = client_for(sim), spare(sim)

    run(lambda: replace_tags(client, "Volume", volume.id, {"a": "1"}))

    assert tags_of(sim, volume) == {"a": "1"}


def test_create_refuses_a_key_the_volume_has_in_another_case_with_530(sim):
    client, volume = client_for(sim), spare(sim)
    run(lambda: client.create_tags("Volume", [volume.id], {"Key": "v"}))
    params = {"resourcetype": "Volume", "resourceids": volume.id}
    params |= {"tags[0].key": "key", "tags[0].value": "w"}

    with pytest.raises(CloudStackJobFailed) as failed:
        run(lambda: client.execute_async("createTags", params))

    assert failed.value.errorcode == 530
    assert failed.value.errortext == f"tag key already on Volume with id {volume.id}"
    assert tags_of(sim, volume) == {"Key": "v"}


def test_create_refuses_an_empty_value_with_431_and_writes_none_of_the_tags(sim):
    client, volume = client_for(sim), spare(sim)
    params = {"resourcetype": "Volume", "resourceids": volume.id}
    params |= {"tags[0].key": "a", "tags[0].value": "1", "tags[1].key": "b", "tags[1].value": ""}

    with pytest.raises(CloudStackJobFailed) as failed:
        run(lambda: client.execute_async("createTags", params))

    assert (failed.value.errorcode, failed.value.errortext) == (
        431,
        "Value for the key b is either null or empty",
    )
    assert tags_of(sim, volume) == {}


@pytest.mark.parametrize(
    "tags", [{"a": ""}, {"a": "1", "A": "2"}], ids=["empty value", "keys equal but for case"]
)
def test_the_client_refuses_tags_cloudstack_would_refuse_without_sending_them(sim, tags):
    client, volume = client_for(sim), spare(sim)

    with pytest.raises(CloudStackInvalidRequest):
        run(lambda: client.create_tags("Volume", [volume.id], tags))

    assert sim.calls("createTags") == []


def test_a_replace_that_meets_a_key_written_meanwhile_deletes_and_writes_again(sim):
    client, volume = client_for(sim), spare(sim)
    run(lambda: client.create_tags("Volume", [volume.id], {"a": "old"}))
    real_delete = client.delete_tags
    calls = 0

    async def racing_delete(*args: object, **kwargs: object) -> None:
        nonlocal calls
        calls += 1
        await real_delete(*args, **kwargs)  # type: ignore[arg-type]
        if calls == 1:  # another writer tags the volume between our delete and create
            await client.create_tags("Volume", [volume.id], {"a": "theirs"})

    client.delete_tags = racing_delete  # type: ignore[method-assign]
    run(lambda: replace_tags(client, "Volume", volume.id, {"a": "ours"}))

    assert tags_of(sim, volume) == {"a": "ours"}
    assert calls == 2
