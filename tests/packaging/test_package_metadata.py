"""What the built packages say of themselves: licence, lintian."""

from __future__ import annotations

import shutil
import subprocess

import pytest

from .conftest import Built

PACKAGES = ("hostsnap-common", "hostsnap-agent", "hostsnap-controller")


def deb_file(built: Built, package: str, path: str) -> str:
    return subprocess.run(
        f"dpkg-deb --fsys-tarfile {built.deb(package)} | tar -xOf - .{path}",
        shell=True,
        capture_output=True,
        text=True,
        check=True,
    ).stdout


@pytest.mark.parametrize("package", PACKAGES)
def test_every_package_is_apache_2(built: Built, package: str):
    copyright_ = deb_file(built, package, f"/usr/share/doc/{package}/copyright")
    license_ = subprocess.run(
        ["rpm", "-qp", "--qf", "%{LICENSE}", str(built.rpm(package))],
        capture_output=True,
        text=True,
        check=True,
    ).stdout

    assert "\nLicense: Apache-2.0\n" in copyright_
    assert license_ == "Apache-2.0"


def test_the_rpm_ships_the_licence_text(built: Built):
    listed = subprocess.run(
        ["rpm", "-qlp", str(built.rpm("hostsnap-common"))], capture_output=True, text=True
    ).stdout.split()

    assert [p for p in listed if p.endswith("/LICENSE")] == [
        f"/usr/share/licenses/hostsnap-common-{built.version}/LICENSE"
    ]


def test_lintian_reports_no_error_or_warning(built: Built):
    debs = [str(built.deb(p)) for p in PACKAGES]
    done = subprocess.run(
        ["lintian", "--fail-on", "error,warning", *debs], capture_output=True, text=True
    )
    assert done.returncode == 0, done.stdout + done.stderr


@pytest.mark.parametrize("unit", ["hostsnap-agent.service", "hostsnap-controller.service"])
def test_systemd_accepts_every_line_of_the_packaged_units(built: Built, unit: str, tmp_path):
    root = tmp_path / "root"
    for package in PACKAGES:
        subprocess.run(["dpkg-deb", "-x", str(built.deb(package)), str(root)], check=True)
    # The targets and units the packaged ones name, from this machine's systemd.
    shutil.copytree("/lib/systemd/system", root / "lib/systemd/system", dirs_exist_ok=True,
                    symlinks=True, ignore=shutil.ignore_patterns("hostsnap-*"))  # fmt: skip
    done = subprocess.run(
        ["systemd-analyze", "verify", "--man=no", f"--root={root}", f"/lib/systemd/system/{unit}"],
        capture_output=True,
        text=True,
    )

    # A value systemd cannot parse is only a warning: nothing may be said at all.
    assert (done.returncode, done.stdout + done.stderr) == (0, "")
