"""What the built packages say of themselves: licence, lintian."""

from __future__ import annotations

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
