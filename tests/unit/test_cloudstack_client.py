"""The CloudStack client against the simulator over real HTTP: signing, paging, async jobs,
retries and deadlines. Waits go through a fake clock, so nothing here really sleeps."""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from controller.cloudstack import (
    CloudStackApiError,
    CloudStackAuthError,
    CloudStackClient,
    CloudStackConfig,
    CloudStackJobFailed,
    CloudStackJobTimeout,
    CloudStackTimeout,
    CloudStackTransportError,
    RetryPolicy,
)
from controller.cloudstack.signing import java_url_encode, signature, string_to_sign
from tests.cloudstack_sim import VERIFY_FAILED, CloudStackSimulator, Volume, java_url_encoder
from tests.unit.cloudstack_support import run


class FakeTime:
    """A monotonic clock that only moves when the client sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0
        self.sleeps: list[float] = []

    def clock(self) -> float:
        return self.now

    async def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.now += seconds


@pytest.fixture
def sim() -> Iterator[CloudStackSimulator]:
    with CloudStackSimulator() as simulator:
        yield simulator


@pytest.fixture
def fake_time() -> FakeTime:
    return FakeTime()


def client_for(
    sim: CloudStackSimulator,
    fake_time: FakeTime | None = None,
    *,
    secret_key: str | None = None,
    retry: RetryPolicy | None = None,
    now: Callable[[], datetime] | None = None,
    **config: Any,
) -> CloudStackClient:
    settings = CloudStackConfig(sim.url, sim.api_key, secret_key or sim.secret_key, **config)
    kwargs: dict[str, Any] = {}
    if fake_time is not None:
        kwargs |= {"clock": fake_time.clock, "sleep": fake_time.sleep}
    if now is not None:
        kwargs["now"] = now
    # Deterministic backoff: always the top of the jittered range.
    policy = retry or RetryPolicy(uniform=lambda low, high: high)
    return CloudStackClient(settings, retry=policy, **kwargs)


def add_volumes(sim: CloudStackSimulator, count: int) -> None:
    zone = sim.world.named(sim.world.zones, "zone-1")
    pool = sim.world.named(sim.world.pools, "nfs-primary")
    for n in range(count):
        sim.world.add(Volume(f"bulk-{n}", zone, "DATADISK", "Ready", pool, f"bulk-{n}.qcow2"))


def volume_named(sim: CloudStackSimulator, name: str) -> Volume:
    volume: Volume = sim.world.named(sim.world.volumes, name)
    return volume


# -- signing ---------------------------------------------------------------------------------


def test_signature_matches_an_independent_implementation_of_cloudstacks_scheme():
    # Vectors from fog's CloudStack provider tests (Ruby, CGI.escape, same scheme).
    params = {"account": "Lorem Ipsum", "domainid": "42", "q": "keywords"}
    assert string_to_sign(params) == "account=lorem%20ipsum&domainid=42&q=keywords"
    assert signature(params, "abcdefg") == "V2CxRU4zQQtox1DZsH/66GDdzhg="
    assert signature({**params, "q": ""}, "abcdefg") == "5bsDirm5pPgVoreQ6vquKRN+4HI="
    text = "'Stöp!' said Fred_-~.*"
    assert java_url_encode(text) == "%27St%C3%B6p%21%27%20said%20Fred_-%7E.*"
    assert java_url_encode(text) == java_url_encoder(text).replace("+", "%20")


def test_a_signed_request_is_accepted_and_answers_in_cloudstacks_shape(sim):
    body = run(lambda: client_for(sim).request("listZones"))

    assert body["count"] == 1
    assert body["zone"][0]["name"] == "zone-1"
    sent = sim.calls("listZones")[0]
    assert sent.method == "GET"
    assert sent.params["signatureversion"] == "3"
    assert sent.params["response"] == "json"
    expires = datetime.strptime(sent.params["expires"], "%Y-%m-%dT%H:%M:%S%z")
    assert timedelta(0) < expires - datetime.now(UTC) <= timedelta(seconds=301)


def test_values_with_characters_java_encodes_differently_are_signed_right(sim, fake_time):
    client = client_for(sim, fake_time)
    volume = volume_named(sim, "spare-1")
    tags = {"hostsnap/layer~1": "a b*c'(é)!", "plus+sign": "x=y&z"}

    run(lambda: client.create_tags("Volume", [volume.id], tags))
    listed = run(lambda: client.request("listTags", {"resourceid": volume.id, "listall": "true"}))

    assert {t["key"]: t["value"] for t in listed["tag"]} == tags
    assert sim.calls("createTags")[0].method == "POST"


def test_a_wrong_secret_is_refused_as_cloudstack_refuses_it_and_not_retried(sim, fake_time):
    client = client_for(sim, fake_time, secret_key="not-the-secret")

    with pytest.raises(CloudStackAuthError) as refused:
        run(lambda: client.request("listVolumes"))

    assert refused.value.errorcode == 401
    assert refused.value.http_status == 401
    assert refused.value.errortext == VERIFY_FAILED
    assert not refused.value.transient
    assert len(sim.calls("listVolumes")) == 1
    assert fake_time.sleeps == []


def test_an_expired_request_is_refused(sim, fake_time):
    # This host's clock runs an hour behind the management server's.
    behind = client_for(sim, fake_time, now=lambda: datetime.now(UTC) - timedelta(hours=1))

    with pytest.raises(CloudStackAuthError) as refused:
        run(lambda: behind.request("listZones"))

    assert refused.value.errortext == VERIFY_FAILED


def test_enforced_timestamps_refuse_an_expiry_more_than_15_minutes_ahead(sim):
    sim.enforce_timestamps = True

    with pytest.raises(CloudStackAuthError):
        run(lambda: client_for(sim, signature_lifetime=3600).request("listZones"))
    assert run(lambda: client_for(sim, signature_lifetime=300).request("listZones"))["count"] == 1


def test_an_unknown_command_is_refused_like_a_bad_signature(sim):
    with pytest.raises(CloudStackAuthError) as refused:
        run(lambda: client_for(sim).request("listNothing"))

    assert refused.value.errortext == VERIFY_FAILED


# -- paging ----------------------------------------------------------------------------------


def test_one_request_returns_at_most_a_page_however_many_records_match(sim):
    add_volumes(sim, 600)  # 606 with the seed's

    body = run(lambda: client_for(sim).request("listVolumes", {"listall": "true"}))

    assert body["count"] == 606
    assert len(body["volume"]) == 500


def test_list_all_pages_through_every_record(sim):
    add_volumes(sim, 1234)  # 1240 with the seed's: 13 pages of 100, the last of 40

    volumes = run(
        lambda: client_for(sim).list_all("listVolumes", {"listall": "true"}, page_size=100)
    )

    assert len(volumes) == 1240
    assert len({v["id"] for v in volumes}) == 1240
    pages = [(c.params["page"], c.params["pagesize"]) for c in sim.calls("listVolumes")]
    assert pages == [(str(n), "100") for n in range(1, 14)]


def test_list_all_stops_when_count_is_reached_on_a_full_page(sim):
    add_volumes(sim, 1194)  # 1200: exactly 12 full pages

    volumes = run(
        lambda: client_for(sim).list_all("listVolumes", {"listall": "true"}, page_size=100)
    )

    assert len(volumes) == 1200
    assert len(sim.calls("listVolumes")) == 12


def test_list_all_of_nothing_is_empty(sim):
    volumes = run(lambda: client_for(sim).list_all("listVolumes", {"state": "Expunged"}))

    assert volumes == []


def test_a_page_larger_than_the_server_allows_is_a_permanent_error(sim, fake_time):
    client = client_for(sim, fake_time)

    with pytest.raises(CloudStackApiError) as refused:
        run(lambda: client.request("listVolumes", {"page": "1", "pagesize": "1000"}))

    assert (refused.value.errorcode, refused.value.cserrorcode) == (431, 4350)
    assert "max allowed page size value: 500" in refused.value.errortext
    assert len(sim.calls("listVolumes")) == 1


def test_list_all_pages_at_a_lower_default_page_size_and_keeps_it(sim, fake_time):
    sim.api.default_page_size = 100  # default.page.size set below the client's 500
    add_volumes(sim, 144)  # 150 with the seed's
    client = client_for(sim, fake_time)

    first = run(lambda: client.list_all("listVolumes", {"listall": "true"}))
    again = run(lambda: client.list_all("listVolumes", {"listall": "true"}))

    assert len(first) == len(again) == 150
    assert len({v["id"] for v in first}) == 150
    sizes = [(c.params["pagesize"], c.status) for c in sim.calls("listVolumes")]
    assert sizes == [("500", 431)] + [("100", 200)] * 4
    assert fake_time.sleeps == []


def test_an_id_that_names_nothing_is_cloudstacks_431(sim, fake_time):
    with pytest.raises(CloudStackApiError) as refused:
        run(lambda: client_for(sim, fake_time).request("listVolumes", {"id": "no-such-volume"}))

    assert (refused.value.errorcode, refused.value.cserrorcode) == (431, 9999)
    assert "Invalid parameter id value=no-such-volume" in refused.value.errortext
    assert fake_time.sleeps == []


# -- async jobs ------------------------------------------------------------------------------


def test_update_volume_waits_for_its_job_and_returns_the_new_record(sim, fake_time):
    sim.jobs.pending_polls = 3
    volume = volume_named(sim, "spare-1")
    client = client_for(sim, fake_time)

    updated = run(
        lambda: client.update_volume(volume.id, path="spare-1.hostsnap-1", chain_info='{"d":1}')
    )

    assert updated["path"] == "spare-1.hostsnap-1"
    assert updated["chaininfo"] == '{"d":1}'
    assert [c.method for c in sim.calls("updateVolume")] == ["POST"]
    polls = sim.calls("queryAsyncJobResult")
    assert len(polls) == 4  # three pending answers, then the result
    assert fake_time.sleeps == [1.0, 1.5, 2.25]
    listed = run(lambda: client.request("listVolumes", {"id": volume.id}))
    assert listed["volume"][0]["path"] == "spare-1.hostsnap-1"


def test_a_failed_job_raises_with_cloudstacks_errorcode_and_text(sim, fake_time):
    volume = volume_named(sim, "spare-1")

    with pytest.raises(CloudStackJobFailed) as failed:
        run(lambda: client_for(sim, fake_time).update_volume(volume.id, state="Bogus"))

    assert failed.value.jobstatus == 2
    assert (failed.value.errorcode, failed.value.jobresultcode) == (431, 431)
    assert failed.value.errortext == "Invalid volume state specified"
    assert volume.state == "Ready"


@pytest.mark.parametrize("jobstatus", [2, 3])
def test_a_job_that_ends_failed_or_cancelled_is_an_error(sim, fake_time, jobstatus):
    sim.fail_next_job(530, "Storage Provider Error", jobstatus=jobstatus)
    volume = volume_named(sim, "spare-1")

    with pytest.raises(CloudStackJobFailed) as failed:
        run(lambda: client_for(sim, fake_time).update_volume(volume.id, path="elsewhere"))

    assert failed.value.jobstatus == jobstatus
    assert failed.value.errorcode == 530
    assert volume.path == "1a2b3c4d-spare1"


def test_a_job_still_running_at_the_deadline_raises_with_its_jobid(sim, fake_time):
    sim.jobs.pending_polls = 10**6
    volume = volume_named(sim, "spare-1")
    client = client_for(sim, fake_time)
    started = fake_time.now

    with pytest.raises(CloudStackJobTimeout) as late:
        run(lambda: client.update_volume(volume.id, path="elsewhere", timeout=20))

    assert late.value.jobid == sim.calls("queryAsyncJobResult")[0].params["jobid"]
    assert fake_time.now - started <= 20


# -- retries and deadlines -------------------------------------------------------------------


@pytest.mark.parametrize(
    "arrange",
    [
        lambda sim: sim.fail_next(530, times=2),
        lambda sim: sim.fail_next(503, times=2),
        lambda sim: sim.fail_next(502, times=2),
        lambda sim: sim.fail_next(429, times=2),
        lambda sim: sim.drop_next(times=2),
    ],
    ids=["530", "503-proxy", "502-proxy", "429-throttled", "dropped"],
)
def test_a_read_is_retried_through_transient_faults_with_growing_waits(sim, fake_time, arrange):
    arrange(sim)

    body = run(lambda: client_for(sim, fake_time).request("listZones"))

    assert body["count"] == 1
    assert [c.status for c in sim.calls("listZones")][-1] == 200
    assert len(sim.calls("listZones")) == 3
    assert fake_time.sleeps == [0.5, 1.0]


def test_retry_after_from_the_server_is_honoured(sim, fake_time):
    sim.fail_next(503, retry_after=4)

    run(lambda: client_for(sim, fake_time).request("listZones"))

    assert fake_time.sleeps == [4.0]


def test_a_write_refused_before_running_is_retried_and_applied_once(sim, fake_time):
    sim.fail_next(503, command="createTags")
    volume = volume_named(sim, "spare-1")
    client = client_for(sim, fake_time)

    run(lambda: client.create_tags("Volume", [volume.id], {"hostsnap": "managed"}))

    assert len(sim.calls("createTags")) == 2
    tags = run(lambda: client.request("listTags", {"resourceid": volume.id}))
    assert tags["count"] == 1


@pytest.mark.parametrize(
    "arrange",
    [
        lambda sim: sim.drop_next(command="createTags"),
        lambda sim: sim.fail_next(530, command="createTags"),
    ],
    ids=["dropped", "530"],
)
def test_a_write_that_may_have_run_is_not_sent_twice(sim, fake_time, arrange):
    arrange(sim)
    volume = volume_named(sim, "spare-1")

    with pytest.raises((CloudStackTransportError, CloudStackApiError)) as failed:
        run(lambda: client_for(sim, fake_time).create_tags("Volume", [volume.id], {"k": "v"}))

    assert not failed.value.transient
    assert len(sim.calls("createTags")) == 1
    assert fake_time.sleeps == []


def test_update_volume_sets_absolute_values_so_it_is_retried_after_a_drop(sim, fake_time):
    sim.drop_next(command="updateVolume")
    volume = volume_named(sim, "spare-1")

    updated = run(lambda: client_for(sim, fake_time).update_volume(volume.id, path="p2"))

    assert updated["path"] == "p2"
    assert len(sim.calls("updateVolume")) == 2


def test_when_attempts_run_out_the_last_error_is_raised(sim, fake_time):
    sim.fail_next(530, times=10)
    client = client_for(sim, fake_time, retry=RetryPolicy(attempts=3, uniform=lambda a, b: b))

    with pytest.raises(CloudStackApiError) as failed:
        run(lambda: client.request("listZones"))

    assert failed.value.errorcode == 530
    assert failed.value.cserrorcode == 4250
    assert failed.value.transient
    assert len(sim.calls("listZones")) == 3


def test_backoff_never_waits_past_the_call_deadline(sim, fake_time):
    sim.fail_next(503, times=50)
    client = client_for(sim, fake_time)
    started = fake_time.now

    with pytest.raises(CloudStackTimeout) as late:
        run(lambda: client.request("listZones", timeout=2.0))

    assert isinstance(late.value.last_error, CloudStackApiError)
    assert late.value.last_error.errorcode == 503
    assert fake_time.now - started < 2.0


def test_a_server_that_does_not_answer_in_time_ends_at_the_deadline(sim):
    sim.delay_next(5.0, times=10)
    client = client_for(sim, timeout=0.6, attempt_timeout=0.25)
    started = time.monotonic()

    with pytest.raises(CloudStackTimeout):
        run(lambda: client.request("listZones"))

    assert time.monotonic() - started < 2.0


def test_an_unreachable_server_is_a_transient_failure_that_never_reached_it(fake_time):
    with CloudStackSimulator() as stopped:
        pass  # its port is closed now
    client = client_for(stopped, fake_time, retry=RetryPolicy(attempts=2, uniform=lambda a, b: b))

    with pytest.raises(CloudStackTransportError) as failed:
        run(lambda: client.create_tags("Volume", ["x"], {"k": "v"}))

    assert not failed.value.sent
    assert failed.value.transient
    assert fake_time.sleeps == [0.5]


# -- the rest of the subset the controller uses ----------------------------------------------


def test_snapshots_and_snapshot_policies_list_in_cloudstacks_shapes(sim):
    client = client_for(sim)
    root = volume_named(sim, "ROOT-10")

    snapshots = run(lambda: client.list_all("listSnapshots", {"volumeid": root.id}))
    policies = run(lambda: client.list_all("listSnapshotPolicies", {"volumeid": root.id}))

    assert [(s["state"], s["volumeid"], s["locationtype"]) for s in snapshots] == [
        ("BackedUp", root.id, "PRIMARY")
    ]
    # The policy answers its interval as the ordinal (1 = DAILY) and the schedule as MM:HH.
    assert [(p["intervaltype"], p["schedule"], p["maxsnaps"]) for p in policies] == [
        (1, "30:02", 8)
    ]


def test_tags_are_created_listed_and_deleted_through_async_jobs(sim, fake_time):
    client = client_for(sim, fake_time)
    volume = volume_named(sim, "spare-1")

    async def scenario() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        await client.create_tags("Volume", [volume.id], {"hostsnap": "managed", "keep": "1"})
        made = await client.list_all("listTags", {"resourceid": volume.id})
        await client.delete_tags("Volume", [volume.id], ["hostsnap"])
        return made, await client.list_all("listTags", {"resourceid": volume.id})

    made, left = run(scenario)

    assert sorted(t["key"] for t in made) == ["hostsnap", "keep"]
    assert [t["key"] for t in left] == ["keep"]
    assert [c.method for c in sim.calls("deleteTags")] == ["POST"]
