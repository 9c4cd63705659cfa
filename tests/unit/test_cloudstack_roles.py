"""What a CloudStack key's role lets it see and do, as the simulator reproduces CloudStack's
response views, and the controller's refusal to run with a key that is not a root admin's."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from controller.cloudstack import (
    NO_RETRY,
    CloudStackApiError,
    CloudStackAuthError,
    CloudStackClient,
    CloudStackConfig,
)
from controller.cloudstack.role import CloudStackRoleError, require_root_admin
from controller.main import main
from controller.reconcile.update import UpdateFailed, update_path
from tests.cloudstack_sim import CloudStackSimulator, Volume
from tests.cloudstack_sim.auth import ApiUser
from tests.unit.cloudstack_support import run

USER, ROOT_ADMIN, DOMAIN_ADMIN = 0, 1, 2


@pytest.fixture
def sim() -> Iterator[CloudStackSimulator]:
    with CloudStackSimulator() as simulator:
        simulator.jobs.pending_polls = 0
        yield simulator


def client_as(sim: CloudStackSimulator, user: ApiUser | None = None) -> CloudStackClient:
    api_key, secret = (user.api_key, user.secret_key) if user else (sim.api_key, sim.secret_key)
    config = CloudStackConfig(sim.url, api_key, secret, job_poll_interval=0.01)
    return CloudStackClient(config, retry=NO_RETRY)


@pytest.mark.parametrize("account_type", [USER, DOMAIN_ADMIN], ids=["user", "domain admin"])
def test_only_a_root_admin_is_shown_volume_paths_pools_and_vm_hosts(sim, account_type):
    other = sim.add_user("bob", account_type)
    everyone = {"listall": "true"}

    root_volumes = run(lambda: client_as(sim).list_all("listVolumes", everyone))
    root_vms = run(lambda: client_as(sim).list_all("listVirtualMachines", everyone))
    their_volumes = run(lambda: client_as(sim, other).list_all("listVolumes", everyone))
    their_vms = run(lambda: client_as(sim, other).list_all("listVirtualMachines", everyone))

    assert all({"path", "storageid", "storage"} <= set(v) for v in root_volumes)
    assert all("instancename" in v for v in root_vms)
    assert any("hostid" in v for v in root_vms)
    assert not any({"path", "storageid", "storage"} & set(v) for v in their_volumes)
    assert not any({"instancename", "hostid", "hostname"} & set(v) for v in their_vms)


def test_a_domain_admins_update_volume_path_is_ignored_and_the_controller_sees_it(sim):
    other = sim.add_user("dora", DOMAIN_ADMIN)
    volume: Volume = sim.world.named(sim.world.volumes, "spare-1")
    before = volume.path

    with pytest.raises(UpdateFailed) as failed:
        run(lambda: update_path(client_as(sim, other), volume.id, "new.qcow2", lambda: None))

    assert volume.path == before
    assert "records path None" in str(failed.value)


@pytest.mark.parametrize("command", ["listConfigurations", "listHosts", "listStoragePools"])
def test_admin_commands_are_refused_to_a_user_as_cloudstack_refuses_them(sim, command):
    other = sim.add_user("bob", USER)

    with pytest.raises(CloudStackAuthError) as refused:
        run(lambda: client_as(sim, other).request(command))

    assert refused.value.errortext == (
        f"The given command '{command}' either does not exist, is not available for user."
    )


def test_a_root_admins_key_passes_the_role_check(sim):
    assert run(lambda: require_root_admin(client_as(sim))) == "admin"


@pytest.mark.parametrize(
    ("account_type", "says"),
    [
        (DOMAIN_ADMIN, "account 'dora' (DomainAdmin); hostsnap needs a root admin's key"),
        (USER, "may not call getUser"),
    ],
    ids=["domain admin", "user"],
)
def test_a_key_that_is_not_a_root_admins_is_refused_with_the_reason(sim, account_type, says):
    other = sim.add_user("dora", account_type)

    with pytest.raises(CloudStackRoleError) as refused:
        run(lambda: require_root_admin(client_as(sim, other)))

    assert says in str(refused.value)
    assert "volume paths" in str(refused.value)


def test_a_key_that_does_not_work_is_not_mistaken_for_a_role(sim):
    config = CloudStackConfig(sim.url, sim.api_key, "wrong-secret")

    with pytest.raises(CloudStackApiError) as refused:
        run(lambda: require_root_admin(CloudStackClient(config, retry=NO_RETRY)))

    assert not isinstance(refused.value, CloudStackRoleError)
    assert refused.value.command == "listZones"


def write_config(sim: CloudStackSimulator, user: ApiUser, tmp_path: Path) -> Path:
    path = tmp_path / "controller.toml"
    path.write_text(
        f"""[cloudstack]
url = "{sim.url}"
api_key = "{user.api_key}"
secret_key = "{user.secret_key}"

[store]
url = "sqlite:///{tmp_path / "c.db"}"

[agents]
port = 1
insecure = true
call_timeout = 2.0
"""
    )
    return path


def test_reconcile_refuses_a_domain_admins_key_before_reading_anything(sim, tmp_path, capsys):
    config = write_config(sim, sim.add_user("dora", DOMAIN_ADMIN), tmp_path)

    code = main(["reconcile", "--config", str(config)])

    assert code == 2
    assert "needs a root admin's key" in capsys.readouterr().err
    assert sim.calls("listVolumes") == []


def test_serve_refuses_a_domain_admins_key_at_start(sim, tmp_path):
    config = write_config(sim, sim.add_user("dora", DOMAIN_ADMIN), tmp_path)

    done = subprocess.run(
        [sys.executable, "-m", "controller", "serve", "--config", str(config)],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert done.returncode == 2, done.stderr
    assert "account 'dora' (DomainAdmin); hostsnap needs a root admin's key" in done.stderr
