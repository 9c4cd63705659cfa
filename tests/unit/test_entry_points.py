"""The console scripts the package installs answer --version and --help."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

BIN = Path(sys.executable).parent
VERSION = tomllib.loads((Path(__file__).resolve().parents[2] / "pyproject.toml").read_text())[
    "project"
]["version"]


@pytest.mark.parametrize("script", ["hostsnap-agent", "hostsnap", "hostsnap-controller"])
def test_version_names_the_program_and_release(script: str):
    out = subprocess.run(
        [str(BIN / script), "--version"], capture_output=True, text=True, check=True
    )
    assert out.stdout.strip() == f"{script} {VERSION}"


def test_lab_help_lists_its_commands():
    out = subprocess.run(
        [str(BIN / "hostsnap-lab"), "--help"], capture_output=True, text=True, check=True
    )
    assert "{up,status,down,demo}" in out.stdout
