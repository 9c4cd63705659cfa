"""One version: pyproject.toml's is what the agent, the CLI and the controller report, in a
checkout and once built (setup.py writes it into agent/_version.py and controller/_version.py;
tests/packaging/test_package_version.py checks the packages)."""

from __future__ import annotations

import shutil
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest

import agent
import controller
from agent import cli
from agent import main as agent_main
from controller import main as controller_main

REPO = Path(__file__).resolve().parents[2]
PYPROJECT_VERSION = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]


def test_every_program_reports_pyprojects_version(capsys):
    parsers = {
        "hostsnap-agent": agent_main.build_parser(),
        "hostsnap": cli.build_parser(),
        "hostsnap-controller": controller_main._parser(),
    }
    for program, parser in parsers.items():
        with pytest.raises(SystemExit):
            parser.parse_args(["--version"])
        assert capsys.readouterr().out == f"{program} {PYPROJECT_VERSION}\n"
    assert agent.__version__ == controller.__version__ == PYPROJECT_VERSION


def versions_in(tree: Path) -> str:
    code = (
        f"import sys; sys.path.insert(0, {str(tree)!r}); import agent, controller;"
        "print(agent.__file__.startswith(sys.path[0]), agent.__version__, controller.__version__)"
    )
    done = subprocess.run(
        [sys.executable, "-I", "-c", code], capture_output=True, text=True, check=True
    )
    return done.stdout.strip()


def test_a_checkout_reports_the_version_its_pyproject_says_and_a_build_what_it_wrote(
    tmp_path: Path,
):
    for package in ("agent", "controller"):
        (tmp_path / package).mkdir()
        shutil.copy(REPO / package / "__init__.py", tmp_path / package)
    (tmp_path / "pyproject.toml").write_text('[project]\nname = "hostsnap"\nversion = "9.9.9"\n')

    assert versions_in(tmp_path) == "True 9.9.9 9.9.9"
    for package in ("agent", "controller"):
        (tmp_path / package / "_version.py").write_text('VERSION = "1.2.3"\n')
    (tmp_path / "pyproject.toml").unlink()  # as installed: no pyproject.toml next to the code
    assert versions_in(tmp_path) == "True 1.2.3 1.2.3"
