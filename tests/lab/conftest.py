"""Session fixtures that bring the real lab up once. If it cannot come up, every lab test
fails with the reason; none is skipped."""

from __future__ import annotations

from collections.abc import Iterator

import libvirt
import pytest

from agent.config import AgentConfig
from agent.operations.services import Services
from agent.wiring import open_services
from hostsnap_lab import lab as lab_stack
from hostsnap_lab.libvirtd import URI


@pytest.fixture(scope="session")
def lab() -> lab_stack.Lab:
    try:
        return lab_stack.up()
    except Exception as e:  # any failure to come up is the reason every lab test fails
        pytest.fail(f"the lab did not come up: {type(e).__name__}: {e}", pytrace=False)


@pytest.fixture(scope="session")
def conn(lab: lab_stack.Lab) -> Iterator[libvirt.virConnect]:
    connection = libvirt.open(URI)
    yield connection
    connection.close()


@pytest.fixture(scope="session")
def agent_config(lab: lab_stack.Lab) -> AgentConfig:
    return AgentConfig(state_dir=lab.agent_state, ceph_conf=str(lab.ceph_conf))


@pytest.fixture
def svc(agent_config: AgentConfig) -> Iterator[Services]:
    services = open_services(agent_config)
    yield services
    services.close()
