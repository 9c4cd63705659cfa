"""`hostsnap-controller`'s commands against the CloudStack simulator and a SQLite store, as
an operator runs them: tables and --json, and a clear error with exit status 2 for what
cannot be done."""

from __future__ import annotations

import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from controller.config import ConfigError, load
from controller.main import main
from controller.store import JobState, Store
from tests.cloudstack_sim import CloudStackSimulator, Disk, add_vm


@pytest.fixture(scope="module")
def sim() -> Iterator[CloudStackSimulator]:
    with CloudStackSimulator() as simulator:
        yield simulator


@pytest.fixture
def config(sim: CloudStackSimulator, tmp_path: Path) -> Path:
    path = tmp_path / "controller.toml"
    path.write_text(
        f"""[cloudstack]
url = "{sim.url}"
api_key = "{sim.api_key}"
secret_key = "{sim.secret_key}"

[store]
url = "sqlite:///{tmp_path / "c.db"}"

[agents]
port = 1
insecure = true
call_timeout = 2.0

[[groups]]
name = "web-and-db"
vms = ["web-1", "db-1"]
"""
    )
    return path


def run(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = main([*args, "--config", str(config)])
    out, err = capsys.readouterr()
    return code, out, err


def as_json(config: Path, capsys: pytest.CaptureFixture[str], *args: str) -> Any:
    code, out, err = run(config, capsys, *args, "--json")
    assert code in (0, 1), err
    return json.loads(out)


def add_nightly(config: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, err = run(
        config, capsys, "policies", "add", "nightly", "--interval", "DAILY",
        "--schedule", "30:02", "--maxsnaps", "3", "--vm", "web-1",
    )  # fmt: skip
    assert (code, err) == (0, ""), err
    assert "policy nightly added" in out


def test_a_policy_added_is_listed_planned_and_run_as_jobs_waiting_for_a_leader(config, capsys):
    add_nightly(config, capsys)

    (listed,) = as_json(config, capsys, "policies")
    assert (listed["name"], listed["max_snaps"]) == ("nightly", 3)
    code, table, _ = run(config, capsys, "policies")
    assert code == 0 and "NAME" in table and "daily at 02:30 UTC" in table
    (planned,) = as_json(config, capsys, "plan")["plan"]["policies"]
    assert [r["vm_name"] for r in planned["runs"]] == ["web-1"]
    assert any("Snapshotting" in str(e) for e in planned["excluded"])  # web-1's data disk

    code, out, _ = run(config, capsys, "run", "nightly")

    assert code == 0 and "1 jobs" in out and "no controller leads" in out
    with Store.open(load(config).store.url) as db:
        (job,) = db.jobs.find()
        assert job.state is JobState.PENDING and job.params["quiesce"] == "preferred"
    status = as_json(config, capsys, "status")
    assert status["leader"] is None
    assert status["jobs"]["pending"] == 1 and status["runs_running"] == 1
    assert status["open_intents"] == 1  # web-1's root is on NFS
    assert status["cloudstack"]["reachable"] is True


def test_a_policy_that_backs_up_shows_its_target_and_its_snapshots_their_states(config, capsys):
    code, _, err = run(
        config, capsys, "policies", "add", "nightly", "--interval", "DAILY", "--schedule",
        "30:02", "--maxsnaps", "3", "--vm", "web-1", "--backup", "secondary",
        "--keep-backups", "14",
    )  # fmt: skip
    assert code == 0, err
    (listed,) = as_json(config, capsys, "policies")
    assert (listed["backup_target"], listed["keep_backups"]) == ("secondary", 14)
    assert "secondary (keep 14)" in run(config, capsys, "policies")[1]
    assert run(config, capsys, "run", "nightly")[0] == 0

    (snapshot,) = as_json(config, capsys, "snapshots")

    assert snapshot["name"].startswith(f"policy-{listed['id']}-")
    assert (snapshot["state"], snapshot["backup_target"]) == ("Creating", "")
    code, table, _ = run(config, capsys, "snapshots")
    assert code == 0 and "Creating" in table and "STATE" in table


def test_keep_backups_without_a_backup_target_is_refused(config, capsys):
    code, _, err = run(
        config, capsys, "policies", "add", "nightly", "--interval", "DAILY", "--schedule",
        "30:02", "--maxsnaps", "3", "--vm", "web-1", "--keep-backups", "2",
    )  # fmt: skip
    assert code == 2 and "keep-backups needs a backup target" in err
    assert as_json(config, capsys, "policies") == []


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--cron", "61 * * * *"], "minute"),
        (["--interval", "DAILY"], "needs --schedule"),
        (["--interval", "DAILY", "--schedule", "30:25"], "out of range"),
    ],
)
def test_a_policy_that_cannot_be_scheduled_is_refused_and_nothing_is_stored(
    config, capsys, args, message
):
    code, _, err = run(
        config, capsys, "policies", "add", "bad", "--maxsnaps", "2", "--vm", "x", *args
    )

    assert code == 2 and message in err
    assert as_json(config, capsys, "policies") == []


def test_running_an_unknown_policy_or_one_without_selectors_says_why(config, capsys):
    code, _, err = run(config, capsys, "run", "nope")
    assert (code, "no policy 'nope'" in err) == (2, True)
    code, _, err = run(config, capsys, "policies", "add", "empty", "--cron", "0 * * * *",
                       "--maxsnaps", "1")  # fmt: skip
    assert (code, "needs --vm" in err) == (2, True)


def test_hosts_show_cloudstacks_hosts_and_that_their_agents_do_not_answer(config, capsys):
    hosts = {h["name"]: h for h in as_json(config, capsys, "hosts")}

    assert {"kvm-1", "kvm-2", "kvm-3"} <= set(hosts)
    assert hosts["kvm-3"]["resource_state"] == "Maintenance"
    assert hosts["kvm-1"]["agent"].startswith("unreachable")


def test_groups_list_their_members_as_cloudstack_shows_them(config, capsys):
    (group,) = as_json(config, capsys, "groups")

    assert group["group"] == "web-and-db"
    assert [(m["vm"], m["state"], m["host"]) for m in group["members"]] == [
        ("web-1", "Running", "kvm-1"),
        ("db-1", "Running", "kvm-2"),
    ]


def test_reconcile_reports_volumes_whose_agents_cannot_be_asked_and_exits_1(config, capsys):
    code, out, _ = run(config, capsys, "reconcile")

    assert code == 1 and "differences found" in out


def test_a_configuration_with_an_unknown_section_or_key_is_refused(tmp_path, capsys):
    path = tmp_path / "c.toml"
    path.write_text("[cloudstak]\nurl = 'x'\n")
    with pytest.raises(ConfigError, match="unknown sections: cloudstak"):
        load(path)
    path.write_text("[dispatch]\nper_hots = 2\n")
    assert main(["status", "--config", str(path)]) == os.EX_CONFIG
    assert "unknown keys: per_hots" in capsys.readouterr().err


def test_options_given_before_a_nested_action_are_kept(config, capsys):
    code = main(["policies", "--config", str(config), "add", "early", "--cron", "0 * * * *",
                 "--maxsnaps", "1", "--vm", "web-1", "--json"])  # fmt: skip
    assert code == 0, capsys.readouterr().err
    assert json.loads(capsys.readouterr().out)["name"] == "early"


def test_unreadable_agent_credentials_are_a_configuration_error(config, capsys):
    config.write_text(config.read_text().replace("insecure = true", 'ca = "/nonexistent/ca.crt"'))

    assert main(["hosts", "--config", str(config)]) == os.EX_CONFIG
    assert "[agents] ca: cannot read /nonexistent/ca.crt" in capsys.readouterr().err


def test_the_plan_keeps_what_cloudstacks_caps_allow_as_set_by_the_operator(sim, config, capsys):
    code, _, err = run(
        config, capsys, "policies", "add", "monthly-20", "--interval", "DAILY",
        "--schedule", "30:02", "--maxsnaps", "20", "--vm", "web-1",
    )  # fmt: skip
    assert code == 0, err
    with sim.world.lock:
        sim.world.configurations["snapshot.max.daily"] = "30"
    try:
        (planned,) = as_json(config, capsys, "plan")["plan"]["policies"]
    finally:
        with sim.world.lock:
            sim.world.configurations["snapshot.max.daily"] = "8"
    assert planned["keep"] == 20  # not the default cap of 8


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[schedule]\npolicy_interval = 0\n", "[schedule] policy_interval must be above 0"),
        ("[dispatch]\nper_host = 0\n", "per_host, per_pool and total must be at least 1"),
        ("[lease]\nduration = 5\nrenew_interval = 5\n", "[lease] a lease of 5.0 s cannot"),
        ("[reconcile]\ninterval = nan\n", "[reconcile] interval: must be a finite number"),
        ("[agents]\nport = 70000\n", "is not a TCP port"),
    ],
)
def test_settings_that_cannot_work_are_refused_with_the_key(tmp_path, text, message):
    path = tmp_path / "c.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as refused:
        load(path)
    assert message in str(refused.value)


# Consistency groups: what cannot be frozen safely is refused with exit status 2.


def with_group(config: Path, body: str) -> Path:
    """The configuration with its [[groups]] table replaced by `body`'s."""
    text = config.read_text()
    config.write_text(text[: text.index("[[groups]]")] + body)
    return config


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ("deadline = 0\n", "deadline: must be a finite number of seconds above 0"),
        ("deadline = inf\n", "deadline: must be a finite number"),
        ("deadline = nan\n", "deadline: must be a finite number"),
        ("max_hold = 0\n", "max_hold: must be a finite number of seconds above 0"),
        ("max_hold = -5\n", "max_hold: must be a finite number"),
        ('max_hold = "soon"\n', "max_hold: expected float"),
        ("hold = 10\n", "keys are name, vms, deadline, max_hold"),
    ],
)
def test_a_group_deadline_or_hold_that_is_not_a_positive_duration_is_refused(
    config, capsys, body, message
):
    with_group(config, f'[[groups]]\nname = "g"\nvms = ["web-1", "db-1"]\n{body}')

    with pytest.raises(ConfigError, match=message):
        load(config)
    code, _, err = run(config, capsys, "groups")
    assert code == os.EX_CONFIG and message in err


def test_a_groups_max_hold_is_read_with_its_deadline(config):
    with_group(config, '[[groups]]\nname = "g"\nvms = ["a", "b"]\ndeadline = 60\nmax_hold = 12.5\n')

    (group,) = load(config).groups
    assert (group.deadline, group.max_hold) == (60.0, 12.5)
    assert (
        load(with_group(config, '[[groups]]\nname = "g"\nvms = ["a", "b"]\n')).groups[0].max_hold
        == 30.0
    )


def test_a_vm_named_twice_in_a_group_is_refused(config, capsys):
    with_group(config, '[[groups]]\nname = "g"\nvms = ["web-1", "db-1", "web-1"]\n')

    code, _, err = run(config, capsys, "groups")

    assert code == os.EX_CONFIG and "[[groups]] g: vms names web-1 twice" in err


def test_a_vm_named_twice_by_id_and_by_name_is_refused_before_anything_is_frozen(
    sim, config, capsys
):
    web = sim.world.named(sim.world.vms, "web-1")
    with_group(config, f'[[groups]]\nname = "g"\nvms = ["web-1", "{web.id}"]\n')

    code, out, err = run(config, capsys, "groups", "snapshot", "g")

    assert code == 2 and out == ""
    assert f"'web-1' and '{web.id}' are the same VM" in err and "Traceback" not in err


def test_a_vm_name_several_tenants_share_is_refused_and_the_id_is_asked_for(tmp_path, capsys):
    with CloudStackSimulator() as own:
        world = own.world
        first = world.named(world.vms, "db-1")
        pool = world.named(world.pools, "ceph-primary")
        other = add_vm(
            world, name="bobs-db", zone=first.zone, host=world.named(world.hosts, "kvm-1"),
            account="bob", disks=[Disk(pool, "bob-db1-root")],
        )  # fmt: skip
        other.name = "db-1"  # another tenant's VM of the same name (its id is its own)
        path = tmp_path / "controller.toml"
        path.write_text(
            f'[cloudstack]\nurl = "{own.url}"\napi_key = "{own.api_key}"\n'
            f'secret_key = "{own.secret_key}"\n[store]\nurl = "sqlite:///{tmp_path / "c.db"}"\n'
            "[agents]\nport = 1\ninsecure = true\ncall_timeout = 2.0\n"
            '[[groups]]\nname = "g"\nvms = ["web-1", "db-1"]\n'
        )

        code, out, err = run(path, capsys, "groups", "snapshot", "g")

        assert code == 2 and out == "" and "Traceback" not in err
        assert "2 VMs answer to 'db-1'" in err and "by its id or instance name" in err
        assert first.id in err and other.id in err
        (group,) = as_json(path, capsys, "groups")
        assert group["members"][1]["state"] == "ambiguous: 2 VMs"
