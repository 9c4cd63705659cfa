"""The packages' programs report the packages' version, which is pyproject.toml's: built from a
copy of this tree released as 0.1.1 (pyproject.toml, the Debian changelog and the spec, which
packaging/build.py requires to agree), the code in the DEB and in the RPM says 0.1.1."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from .conftest import REPO, Built, build

RELEASE = "0.1.1"
CHANGELOG_ENTRY = f"""hostsnap ({RELEASE}) bookworm; urgency=medium

  * A release of the test's own.

 -- hostsnap maintainers <hostsnap@example.org>  Wed, 03 Dec 2026 12:00:00 +0000

"""
PROGRAMS = (
    ("hostsnap-agent", "agent.main", "build_parser"),
    ("hostsnap", "agent.cli", "build_parser"),
    ("hostsnap-controller", "controller.main", "_parser"),
)


def released_tree(into: Path) -> Path:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO, capture_output=True, text=True, check=True,
    ).stdout  # fmt: skip
    for name in filter(None, listed.split("\0")):
        if (REPO / name).is_file():
            (into / name).parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(REPO / name, into / name, follow_symlinks=False)
    subprocess.run(["git", "init", "-q", str(into)], check=True)  # build.py lists with git
    pyproject = into / "pyproject.toml"
    pyproject.write_text(re.sub(r'(?m)^version = ".*"$', f'version = "{RELEASE}"',
                                pyproject.read_text(), count=1))  # fmt: skip
    changelog = into / "packaging" / "debian" / "changelog"
    changelog.write_text(CHANGELOG_ENTRY + changelog.read_text())
    spec = into / "packaging" / "rpm" / "hostsnap.spec"
    spec.write_text(re.sub(r"(?m)^Version:.*$", f"Version:        {RELEASE}", spec.read_text()))
    return into


@pytest.fixture(scope="module")
def released(tmp_path_factory: pytest.TempPathFactory) -> Built:
    tree = released_tree(tmp_path_factory.mktemp("tree"))
    return build(tree, tmp_path_factory.mktemp("released"))


def unpack(built: Built, kind: str, into: Path) -> Path:
    """The three packages' files under `into`, as they would be installed."""
    into.mkdir()
    for package in ("hostsnap-common", "hostsnap-agent", "hostsnap-controller"):
        if kind == "deb":
            subprocess.run(["dpkg-deb", "-x", str(built.deb(package)), str(into)], check=True)
        else:
            subprocess.run(
                f"rpm2cpio {built.rpm(package)} | cpio -idm --quiet",
                shell=True, cwd=into, check=True,
            )  # fmt: skip
    return into / "usr" / "share" / "hostsnap"


def reported(private: Path, module: str, function: str) -> str:
    """What the program says to --version, run from the unpacked files on Debian's Python."""
    code = (
        f"import sys; sys.path.insert(0, {str(private)!r}); import {module};"
        f"{module}.{function}().parse_args(['--version'])"
    )
    done = subprocess.run(
        ["/usr/bin/python3", "-I", "-c", code], capture_output=True, text=True, check=False
    )
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_the_packaged_programs_report_the_released_version(released: Built, kind, tmp_path):
    private = unpack(released, kind, tmp_path / kind)

    assert released.version == RELEASE
    for program, module, function in PROGRAMS:
        assert reported(private, module, function) == f"{program} {RELEASE}"


def test_the_packages_of_this_tree_report_the_changelogs_version(built: Built, tmp_path):
    changelog = subprocess.run(
        ["dpkg-parsechangelog", "-l", str(REPO / "packaging/debian/changelog"), "-S", "Version"],
        capture_output=True, text=True, check=True,
    ).stdout.strip()  # fmt: skip
    private = unpack(built, "deb", tmp_path / "deb")

    assert built.version == changelog
    for program, module, function in PROGRAMS:
        assert reported(private, module, function) == f"{program} {changelog}"
