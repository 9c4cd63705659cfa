"""The agent's configuration file, its environment overrides and its refusals."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from agent.settings import ConfigError, load

REPO = Path(__file__).resolve().parents[2]
EXAMPLE = REPO / "packaging" / "config" / "agent.toml"


def test_the_documented_example_loads_with_its_defaults():
    settings = load(EXAMPLE, env={})
    assert settings.agent.state_dir == Path("/var/lib/hostsnap")
    assert settings.agent.pool_headroom == 0.25
    assert settings.listen.unix_socket == "/run/hostsnap/agent.sock" and not settings.listen.tcp
    assert settings.audit_log == "/var/log/hostsnap/audit.log"


def test_environment_overrides_every_key(tmp_path: Path):
    settings = load(
        EXAMPLE,
        env={
            "HOSTSNAP_AGENT_FREEZE_DEADLINE": "3",
            "HOSTSNAP_AGENT_STATE_DIR": str(tmp_path),
            "HOSTSNAP_LISTEN_INSECURE_TCP": "yes",
            "HOSTSNAP_LISTEN_TCP": "127.0.0.1:7443",
        },
    )
    assert settings.agent.freeze_deadline == 3.0
    assert settings.agent.state_dir == tmp_path
    assert settings.listen.insecure_tcp and settings.listen.tcp == "127.0.0.1:7443"
    capacity = load(EXAMPLE, env={"HOSTSNAP_ADMISSION_IOPS_CAPACITY": "/pool/=500,rbd:cs=900"})
    assert capacity.admission.iops_capacity == {"/pool": 500.0, "rbd:cs": 900.0}


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ('[listen]\ntcp = "0.0.0.0:7443"\n', "refuses to listen on TCP without them"),
        ("[agent]\nfreeze_deadline = 0\n", "freeze_deadline must be between"),
        ("[agent]\nfreeze_deadlin = 3\n", "unknown keys: freeze_deadlin"),
        ('[roles]\nctl = "root"\n', "a role is one of viewer, operator, admin"),
        ("[agent]\nguest_agent_timeout = 'soon'\n", "expected int"),
        ('[listen]\nunix_socket = ""\n', "needs unix_socket or tcp"),
        ("[agent\n", "agent.toml"),
        ("[limits]\njob_workers = 0\n", "job_workers must be greater than 0"),
        ('[role]\nctl = "viewer"\n', "unknown sections: role"),
        ("[agent]\nguest_agent_timeout = 2.5\n", "expected a whole number"),
        ('[listen]\ntcp = "0.0.0.0:7443"\ninsecure_tcp = true\n', "loopback address only"),
        ("[admission]\nwait_timeout = inf\n", "finite and greater than 0"),
        ('[admission.iops_capacity]\n"/pool" = 0\n', "finite and greater than 0"),
    ],
)
def test_a_bad_configuration_is_refused_with_the_key_named(tmp_path: Path, text: str, message: str):
    config = tmp_path / "agent.toml"
    config.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load(config, env={})


def test_check_config_answers_without_starting_and_a_bad_one_exits_ex_config(tmp_path: Path):
    # This tree's agent, not the console script of whichever checkout the venv installed.
    agent = [sys.executable, "-m", "agent.main"]
    good = subprocess.run(
        [*agent, "--config", str(EXAMPLE), "--check-config"],
        capture_output=True,
        text=True,
        cwd=REPO,
    )
    assert good.returncode == 0 and "configuration is valid" in good.stdout
    bad_file = tmp_path / "agent.toml"
    bad_file.write_text('[listen]\ntcp = "0.0.0.0:7443"\n')
    for check in (["--check-config"], []):  # the unit's ExecStart= is without --check-config
        bad = subprocess.run(
            [*agent, "--config", str(bad_file), *check], capture_output=True, text=True, cwd=REPO
        )
        # 78, EX_CONFIG: what the systemd units' RestartPreventExitStatus= names.
        assert bad.returncode == os.EX_CONFIG == 78 and "mutual TLS" in bad.stderr
