"""`down` removes everything the lab made; `up` afterwards builds it again.

Runs last (see tests/conftest.py): it takes the lab down under the other tests' feet.
"""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from hostsnap_lab import lab as lab_stack

HOSTSNAP_LAB = str(Path(sys.executable).parent / "hostsnap-lab")


@pytest.mark.lab_lifecycle
def test_down_leaves_no_lab_process_or_file_and_up_restores(lab: lab_stack.Lab):
    down = subprocess.run(
        [HOSTSNAP_LAB, "--state-dir", str(lab.paths.root), "down"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert down.returncode == 0, down.stderr
    assert lab_stack.leftover_processes(lab.paths) == []
    assert not lab.paths.root.exists()

    up = subprocess.run(
        [HOSTSNAP_LAB, "--state-dir", str(lab.paths.root), "up"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert up.returncode == 0, up.stderr
    for name in ("lab-qcow2", "lab-rbd"):
        assert re.search(rf"^{name}\s+running, answers guest-ping", up.stdout, re.M), up.stdout
