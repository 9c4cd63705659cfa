"""Builds hostsnap's packages from this tree: the DEBs (packaging/debian/, dpkg-buildpackage)
and the RPM (packaging/rpm/hostsnap.spec, rpmbuild -bb).

    python3 packaging/build.py [--out DIR] [--only deb|rpm]      (default DIR: dist/)

The tree is taken as it is on disk (tracked and untracked files, not what .gitignore
ignores), so uncommitted work is packaged too. Standard library only; the build tools are
Debian packages (tests/hostsnap_lab/packages.py installs them; `make packages` does).
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tarfile
import tempfile
import tomllib
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGING = REPO / "packaging"
SPEC = PACKAGING / "rpm" / "hostsnap.spec"
SYSTEM_PATH = "/usr/sbin:/usr/bin:/sbin:/bin"


class BuildError(RuntimeError):
    pass


def run(argv: list[str], cwd: Path) -> None:
    # The distribution's tools and Python only, whatever else is first on the caller's PATH.
    env = {**os.environ, "PATH": SYSTEM_PATH}
    done = subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, check=False)
    if done.returncode != 0:
        output = (done.stdout + done.stderr).strip().splitlines()
        raise BuildError(
            f"{' '.join(argv)} failed ({done.returncode}):\n" + "\n".join(output[-40:])
        )


def version() -> str:
    """pyproject.toml's version, which the Debian changelog and the spec must repeat."""
    project = tomllib.loads((REPO / "pyproject.toml").read_text())["project"]["version"]
    changelog = (PACKAGING / "debian" / "changelog").read_text().split("\n", 1)[0]
    found = {
        "packaging/debian/changelog": re.search(r"\(([^)-]+)", changelog),
        "packaging/rpm/hostsnap.spec": re.search(r"^Version:\s*(\S+)", SPEC.read_text(), re.M),
    }
    for where, match in found.items():
        if match is None or match.group(1) != project:
            seen = match.group(1) if match else "none"
            raise BuildError(f"{where} says version {seen}, pyproject.toml {project}")
    return str(project)


def source_files() -> list[str]:
    listed = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
        cwd=REPO,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    return sorted(f for f in listed.split("\0") if f and (REPO / f).is_file())


def copy_tree(dest: Path) -> None:
    for name in source_files():
        target = dest / name
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(REPO / name, target, follow_symlinks=False)


def build_debs(out: Path, ver: str) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="hostsnap-deb-") as tmp:
        src = Path(tmp) / f"hostsnap-{ver}"
        copy_tree(src)
        shutil.copytree(src / "packaging" / "debian", src / "debian", symlinks=True)
        run(["dpkg-buildpackage", "--build=binary", "--no-sign"], cwd=src)
        return [Path(shutil.move(deb, out / deb.name)) for deb in sorted(Path(tmp).glob("*.deb"))]


def build_rpm(out: Path, ver: str) -> list[Path]:
    with tempfile.TemporaryDirectory(prefix="hostsnap-rpm-") as tmp:
        top = Path(tmp)
        with tarfile.open(top / f"hostsnap-{ver}.tar.gz", "w:gz") as tar:
            for name in source_files():
                tar.add(REPO / name, f"hostsnap-{ver}/{name}", recursive=False)
        run(
            [
                "rpmbuild",
                "-bb",
                "--define",
                f"_topdir {top}",
                "--define",
                f"_sourcedir {top}",
                str(SPEC),
            ],
            cwd=top,
        )
        return [Path(shutil.move(rpm, out / rpm.name)) for rpm in sorted(top.glob("RPMS/*/*.rpm"))]


def build(out: Path, only: str | None = None) -> list[Path]:
    """Builds into `out` and returns the package files."""
    ver = version()
    out.mkdir(parents=True, exist_ok=True)
    built = []
    if only in (None, "deb"):
        built += build_debs(out.resolve(), ver)
    if only in (None, "rpm"):
        built += build_rpm(out.resolve(), ver)
    return built


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=REPO / "dist")
    parser.add_argument("--only", choices=("deb", "rpm"))
    args = parser.parse_args()
    try:
        built = build(args.out, args.only)
    except BuildError as e:
        print(f"packaging/build.py: {e}", file=sys.stderr)
        return 1
    for path in built:
        print(path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
