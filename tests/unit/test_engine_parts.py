"""The engine's small parts: names, overlay naming, locks, the journal, the hook's rule."""

from __future__ import annotations

import io
import json
from collections.abc import Callable

import pytest

from agent import libvirt_hook, validate
from agent.config import AgentConfig
from agent.errors import Cancelled, Conflict, InvalidArgument
from agent.jobs import JobState, Journal
from agent.locks import VolumeLocks
from agent.operations import jobrun
from agent.operations.services import CALLER_GONE, Services
from agent.operations.volumes import overlay_path
from tests.unit.fakes import UnusedHost, UnusedRbd

ID_A, ID_B = "a" * 32, "b" * 32


@pytest.mark.parametrize("name", ["", "../x", "a/b", "x\n", "x" * 201])
def test_bad_domain_names_are_refused(name: str):
    with pytest.raises(InvalidArgument):
        validate.domain_name(name)


def test_overlay_names_derive_from_the_original_image():
    first = overlay_path("/pool/vol.qcow2", ID_A)
    assert first == f"/pool/vol.qcow2.hostsnap-{ID_A}"
    assert overlay_path(first, ID_B) == f"/pool/vol.qcow2.hostsnap-{ID_B}"


def test_a_locked_volume_names_its_holder_and_is_free_again_after():
    locks = VolumeLocks()
    with locks.hold(["vm/vda"], "job-1", "snapshot"):
        with (
            pytest.raises(Conflict, match="job job-1 \\(snapshot\\)"),
            locks.hold(["vm/vdb", "vm/vda"], "job-2", "delete"),
        ):
            pass
        with locks.hold(["vm/vdb"], "job-3", "delete"):
            pass
    with locks.hold(["vm/vda"], "job-4", "snapshot"):
        pass


def test_journal_keeps_steps_in_order_and_answers_an_idempotency_key(tmp_path):
    journal = Journal(tmp_path / "journal.sqlite", clock=lambda: 100.0)
    job, created = journal.start("j1", "snapshot", "vm", {"quiesce": "required"}, "key-1")
    assert created and job.state == JobState.RUNNING
    journal.record("j1", "plan", overlays={"vda": "/x"})
    journal.record("j1", "freeze")
    again, created_again = journal.start("j2", "snapshot", "vm", {}, "key-1")
    assert not created_again and again.id == "j1"
    with pytest.raises(InvalidArgument, match="was used by job j1"):
        journal.start("j3", "delete", "vm", {}, "key-1")
    journal.succeed("j1", {"ok": True})
    reopened = Journal(tmp_path / "journal.sqlite")
    done = reopened.get("j1")
    assert [s.name for s in done.steps] == ["plan", "freeze"]
    plan = done.step("plan")
    assert plan is not None and plan.detail == {"overlays": {"vda": "/x"}}
    assert done.state == JobState.SUCCEEDED and done.result == {"ok": True}


def test_journal_reports_stale_layers_with_their_active_image(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.set_active_layer("vm", "vda", "/p/v.hostsnap-a", ["/p/v"])
    journal.set_active_layer("vm", "vda", "/p/v.hostsnap-b", ["/p/v.hostsnap-a"])
    stale = journal.stale_layers()
    assert set(stale) == {"/p/v", "/p/v.hostsnap-a"}
    assert {s["active"] for s in stale.values()} == {"/p/v.hostsnap-b"}


def run_hook(tmp_path, xml: str, stale: dict[str, dict[str, str]], op: str = "prepare"):
    layers = tmp_path / "layers.json"
    layers.write_text(json.dumps(stale))
    err = io.StringIO()
    code = libvirt_hook.main(
        ["--layers", str(layers), "vm", op, "begin", "-"], io.StringIO(xml), err
    )
    return code, err.getvalue()


def test_hook_refuses_a_stale_layer_whose_active_image_exists(tmp_path):
    active = tmp_path / "v.hostsnap-a"
    active.write_text("")
    xml = "<domain><name>vm</name><devices><disk type='file'><source file='/p/v'/>"
    xml += "<target dev='vda'/></disk></devices></domain>"
    stale = {"/p/v": {"domain": "vm", "target": "vda", "active": str(active)}}
    code, err = run_hook(tmp_path, xml, stale)
    assert code == 1 and f"the active image is {active}" in err
    assert run_hook(tmp_path, xml, stale, op="release")[0] == 0
    active.unlink()  # the volume was removed and made anew: the record is obsolete
    assert run_hook(tmp_path, xml, stale)[0] == 0


def test_a_job_refused_admission_does_not_use_up_its_idempotency_key(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    journal.start("first", "snapshot", "vm", {}, "key")
    journal.fail("first", "not admitted", "ADMISSION_TIMEOUT", "NotAdmitted")
    again, created = journal.start("second", "snapshot", "vm", {}, "key")
    assert created and again.id == "second"
    journal.fail("second", "failed for real", "OPERATION_FAILED")
    replayed, created = journal.start("third", "snapshot", "vm", {}, "key")
    assert not created and replayed.id == "second"


def test_a_job_cancelled_because_its_caller_went_away_leaves_its_key_free(tmp_path):
    journal = Journal(tmp_path / "j.sqlite")
    svc = Services(AgentConfig(state_dir=tmp_path), UnusedHost(), UnusedRbd(), journal)
    spec = jobrun.JobSpec("snapshot", "vm", ["vm/vda"], {})

    def cancelled_at_first_step(why: str | None) -> Callable[[str], None]:
        def body(job_id: str) -> None:
            if why is None:
                svc.cancellations.request(job_id)  # CancelJob
            else:
                svc.cancellations.request(job_id, why)  # the executor, for a call given up
            jobrun.checkpoint(svc, job_id, "planning")

        return body

    with pytest.raises(Cancelled):
        jobrun.run(svc, spec, "key", cancelled_at_first_step(CALLER_GONE), dict)
    assert journal.by_key("key", "snapshot", "vm") is None  # the resend starts the job anew

    with pytest.raises(Cancelled):
        jobrun.run(svc, spec, "key", cancelled_at_first_step(None), dict)
    asked = journal.by_key("key", "snapshot", "vm")
    assert asked is not None and asked.state == JobState.CANCELLED  # asked for: the key is used
