"""The packages built once per session from this tree, as `make packages` builds them
(packaging/build.py with Debian's tools); nothing is installed on this machine."""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]


@dataclass(frozen=True)
class Built:
    out: Path

    @property
    def version(self) -> str:
        return self.deb("hostsnap-common").name.split("_")[1]

    def deb(self, package: str) -> Path:
        (found,) = self.out.glob(f"{package}_*_all.deb")
        return found

    def rpm(self, package: str) -> Path:
        (found,) = self.out.glob(f"{package}-[0-9]*.noarch.rpm")
        return found


def build(tree: Path, out: Path) -> Built:
    done = subprocess.run(
        ["/usr/bin/python3", str(tree / "packaging" / "build.py"), "--out", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    return Built(out)


@pytest.fixture(scope="session")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    return build(REPO, tmp_path_factory.mktemp("packages"))
