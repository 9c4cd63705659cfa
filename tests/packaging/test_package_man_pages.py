"""The DEBs and the RPM ship the man pages made at build time from the parsers of the code
they ship: every command and option in them (as tests/unit/test_man_pages.py checks of the
generator), consolidate, flatten, --defer-merge and --force among them."""

from __future__ import annotations

import gzip
import subprocess
from pathlib import Path

import pytest

from tests.unit.test_man_pages import by_command, commands, expected, generator, plain

from .conftest import Built

PAGES = {"hostsnap-agent": "hostsnap-agent", "hostsnap": "hostsnap-agent"}
PAGES["hostsnap-controller"] = "hostsnap-controller"  # page -> package


def shipped(built: Built, kind: str, package: str, page: str, into: Path) -> str:
    into.mkdir(parents=True, exist_ok=True)
    if kind == "deb":
        subprocess.run(["dpkg-deb", "-x", str(built.deb(package)), str(into)], check=True)
    else:
        subprocess.run(
            f"rpm2cpio {built.rpm(package)} | cpio -idm --quiet", shell=True, cwd=into, check=True
        )
    (found,) = (into / "usr/share/man/man8").glob(f"{page}.8*")
    data = found.read_bytes()
    return plain((gzip.decompress(data) if found.suffix == ".gz" else data).decode())


@pytest.mark.parametrize("kind", ["deb", "rpm"])
def test_the_packages_ship_pages_with_every_command_and_option(built: Built, kind, tmp_path):
    for program, module, function, _ in generator().PAGES:
        page = shipped(built, kind, PAGES[program], program, tmp_path / program)
        sections = by_command(page, program)
        for path, command in commands(generator().parser_of(module, function), program):
            assert [w for w in expected(command) if w not in sections.get(path, "")] == []
        if program == "hostsnap":
            assert "--defer-merge" in sections["hostsnap delete"]
            assert "--force" in sections["hostsnap flatten"]
            assert "hostsnap consolidate" in sections
