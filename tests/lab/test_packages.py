"""hostsnap's packages, built from this tree (packaging/build.py, as `make packages`): the RPM
holds what an EL host needs; both kinds keep the Python code in the private directory
/usr/share/hostsnap (the gRPC stubs in hostsnap-common, which the agent and the controller
share, no file in two packages) and ship nothing of the lab; the DEBs pass lintian, install
with apt-get on this machine, run on Debian's own Python libraries (the installed agent serves
a lab domain, the installed CLI takes and lists its snapshot, the installed libvirt hook
refuses the old layer; the installed controller, as root and as its service's user, reads a
configuration, migrates a SQLite store and answers from a CloudStack simulator) without
shadowing the development venv's editable install, and purge without leaving a file behind.

The tests run in this order (the last one purges). Installing puts the hook in
/etc/libvirt/hooks/qemu.d/, next to the lab's own /etc/libvirt/hooks/qemu; it reads the layer
map of the state_dir in /etc/hostsnap/agent.toml, which names only this test's domain, so the
lab's domains start as before."""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import libvirt
import pytest

from agent.hypervisor.domain_xml import with_disk_source
from hostsnap_lab import domains
from hostsnap_lab.lab import Lab
from tests.cloudstack_sim import CloudStackSimulator

from .agent_process import free_port, make_ca, make_cert
from .support import disk_source, qcow2_and_rbd_disks, wait_for_agent

REPO = Path(__file__).resolve().parents[2]
SYSTEM_PYTHON = "/usr/bin/python3"
# The installed programs see the distribution and nothing of the checkout or the venv.
DISTRO_ENV = {"PATH": "/usr/sbin:/usr/bin:/sbin:/bin", "LANG": "C.UTF-8"}
PACKAGES = ("hostsnap-common", "hostsnap-agent", "hostsnap-controller")
NAME = "lab-package"
AGENT_CONFIG = Path("/etc/hostsnap/agent.toml")
AGENT_UNIT = Path("/lib/systemd/system/hostsnap-agent.service")
CONTROLLER_CONFIG = Path("/etc/hostsnap/controller.toml")
CONTROLLER_UNIT = Path("/lib/systemd/system/hostsnap-controller.service")
# The controller service's system user (the unit's User=), made by the package.
CONTROLLER_USER = "_hostsnap-controller"
# Every command of `hostsnap-controller --help` (controller/main.py).
CONTROLLER_COMMANDS = ("serve", "status", "hosts", "policies", "plan", "run", "groups", "reconcile")
# hostsnap's private module directory (packaging/bin/ launchers put it first on sys.path).
PRIVATE = "/usr/share/hostsnap"
IMPORT_PACKAGES = ("agent", "controller", "hostsnap")
# Where the distribution's Python finds public modules: nothing of hostsnap belongs there.
PUBLIC_DIRS = ("/usr/lib/python3/", "/usr/lib/python3.", "/usr/local/lib/python3")


@dataclass(frozen=True)
class Built:
    common_deb: Path
    agent_deb: Path
    controller_deb: Path
    common_rpm: Path
    agent_rpm: Path
    controller_rpm: Path

    def debs(self) -> list[Path]:
        return [self.common_deb, self.agent_deb, self.controller_deb]


def run(*argv: str, timeout: float = 300) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        argv, capture_output=True, text=True, timeout=timeout, env=DISTRO_ENV, check=False
    )


def apt_get(*args: str) -> subprocess.CompletedProcess[str]:
    env = {**DISTRO_ENV, "DEBIAN_FRONTEND": "noninteractive"}
    lock = "DPkg::Lock::Timeout=300"
    return subprocess.run(
        ["apt-get", "-y", "-q", "-o", lock, *args],
        capture_output=True,
        text=True,
        timeout=600,
        env=env,
        check=False,
    )


def unpack(package: Path, into: Path) -> Path:
    """The files of a .deb or .rpm, extracted under `into`."""
    into.mkdir()
    if package.suffix == ".deb":
        subprocess.run(["dpkg-deb", "-x", str(package), str(into)], check=True)
    else:
        cpio = subprocess.run(["rpm2cpio", str(package)], capture_output=True, check=True)
        subprocess.run(
            ["cpio", "-idm", "--quiet"], input=cpio.stdout, cwd=into, check=True, env=DISTRO_ENV
        )
    return into


def installed_packages() -> list[str]:
    """Those of PACKAGES dpkg knows in any state (installed, or config files left)."""
    known = run("dpkg-query", "-W", "-f=${Package} ${db:Status-Status}\\n", *PACKAGES).stdout
    return [line.split()[0] for line in known.splitlines() if line.split()[1] != "not-installed"]


@pytest.fixture(scope="module")
def built(tmp_path_factory: pytest.TempPathFactory) -> Built:
    out = tmp_path_factory.mktemp("packages")
    build = run(SYSTEM_PYTHON, str(REPO / "packaging" / "build.py"), "--out", str(out))
    assert build.returncode == 0, build.stderr
    return Built(
        common_deb=out / "hostsnap-common_0.1.0_all.deb",
        agent_deb=out / "hostsnap-agent_0.1.0_all.deb",
        controller_deb=out / "hostsnap-controller_0.1.0_all.deb",
        common_rpm=out / "hostsnap-common-0.1.0-1.noarch.rpm",
        agent_rpm=out / "hostsnap-agent-0.1.0-1.noarch.rpm",
        controller_rpm=out / "hostsnap-controller-0.1.0-1.noarch.rpm",
    )


@pytest.fixture(scope="module")
def installed(built: Built, lab: Lab) -> Iterator[list[str]]:
    """Installs the three DEBs with apt-get; yields the files they installed; purges at the end
    (test_purge_... does it first and checks it)."""
    already = installed_packages()
    assert not already, (
        f"{' '.join(already)} is already on this machine; this test installs and purges it: "
        f"apt-get purge {' '.join(already)}"
    )
    install = apt_get("install", *map(str, built.debs()))
    try:
        assert install.returncode == 0, install.stdout + install.stderr
        listed = run("dpkg-query", "-L", *PACKAGES).stdout.split()
        yield [p for p in listed if os.path.lexists(p) and not os.path.isdir(p)]
    finally:
        if installed_packages():
            apt_get("purge", *PACKAGES)


def test_rpmbuild_makes_rpms_with_the_unit_config_entry_points_and_hook(built: Built):
    agent = run("rpm", "-qlp", str(built.agent_rpm))
    assert agent.returncode == 0, agent.stderr
    files = set(agent.stdout.split())
    assert {
        "/usr/lib/systemd/system/hostsnap-agent.service",
        "/etc/hostsnap/agent.toml",
        "/usr/bin/hostsnap-agent",
        "/usr/bin/hostsnap",
        f"{PRIVATE}/agent/main.py",
        f"{PRIVATE}/agent/cli.py",
        f"{PRIVATE}/agent/libvirt_hook.py",
        "/etc/libvirt/hooks/qemu.d/hostsnap",
        "/usr/libexec/hostsnap/hostsnap-qemu-hook",
        "/etc/logrotate.d/hostsnap-agent",
    } <= files
    # Byte-compiled in the RPM (%py_byte_compile): EL compiles nothing outside site-packages.
    assert any(
        re.fullmatch(rf"{PRIVATE}/agent/__pycache__/main\.cpython-3\d+\.pyc", f) for f in files
    )
    config = run("rpm", "-qp", "--configfiles", str(built.agent_rpm)).stdout.split()
    assert "/etc/hostsnap/agent.toml" in config
    common = set(run("rpm", "-qlp", str(built.common_rpm)).stdout.split())
    assert f"{PRIVATE}/hostsnap/agent/v1/agent_pb2_grpc.py" in common  # generated by the build
    controller = set(run("rpm", "-qlp", str(built.controller_rpm)).stdout.split())
    assert {
        "/usr/lib/systemd/system/hostsnap-controller.service",
        "/usr/bin/hostsnap-controller",
        "/etc/hostsnap/controller.toml",
        f"{PRIVATE}/controller/main.py",
    } <= controller
    for listed in (files, common, controller):
        assert not [f for f in listed if f.startswith(PUBLIC_DIRS)]
    # No file in two packages (directories may be shared): all three install side by side.
    assert not (files & common) - {PRIVATE}
    assert not (files & controller) - {PRIVATE, "/etc/hostsnap"}
    assert not (common & controller) - {PRIVATE}
    # The controller's configuration may hold CloudStack's secret key: 0640, the service's group.
    assert (
        "/etc/hostsnap/controller.toml"
        in run("rpm", "-qp", "--configfiles", str(built.controller_rpm)).stdout.split()
    )
    each_file = "[%{FILEMODES:perms} %{FILEUSERNAME} %{FILEGROUPNAME} %{FILENAMES}\n]"
    modes = run("rpm", "-qp", "--qf", each_file, str(built.controller_rpm)).stdout.splitlines()
    assert f"-rw-r----- root {CONTROLLER_USER} /etc/hostsnap/controller.toml" in modes
    requires = run("rpm", "-qp", "--requires", str(built.agent_rpm)).stdout.split("\n")
    assert "python3 >= 3.11" in requires and "hostsnap-common = 0.1.0-1" in requires
    common_requires = run("rpm", "-qp", "--requires", str(built.common_rpm)).stdout.split("\n")
    assert "python3-grpcio >= 1.51" in common_requires
    controller_requires = run("rpm", "-qp", "--requires", str(built.controller_rpm)).stdout
    assert "hostsnap-common = 0.1.0-1" in controller_requires.split("\n")
    # A management server needs no hypervisor package.
    assert not re.search(r"libvirt|rados|rbd|qemu|hostsnap-agent", controller_requires)


def test_the_packages_keep_the_code_private_and_ship_nothing_of_the_lab(
    built: Built, tmp_path: Path
):
    """agent, controller and hostsnap (the stubs) only in /usr/share/hostsnap, none of them in a
    directory on Python's default sys.path; no distribution metadata (which describes the
    whole project, lab included), and no file that names the lab."""
    expected = {
        built.common_deb: {"hostsnap"},
        built.common_rpm: {"hostsnap"},
        built.agent_deb: {"agent"},
        built.agent_rpm: {"agent"},
        built.controller_deb: {"controller"},
        built.controller_rpm: {"controller"},
    }
    owners: dict[str, dict[str, str]] = {".deb": {}, ".rpm": {}}
    for package, modules in expected.items():
        root = unpack(package, tmp_path / package.name)
        files = sorted(p for p in root.rglob("*") if not p.is_dir())
        paths = ["/" + str(p.relative_to(root)) for p in files]
        for path in paths:  # no file in two packages of a kind: they install side by side
            other = owners[package.suffix].setdefault(path, package.name)
            assert other == package.name or path.startswith("/usr/share/doc/"), (path, other)
        assert {p.name for p in (root / PRIVATE.lstrip("/")).iterdir()} == modules, package
        assert not [p for p in paths if p.startswith(PUBLIC_DIRS)], package
        assert not [p for p in paths if re.search(r"\.(dist|egg)-info(/|$)", p)], package
        naming_the_lab = [
            path
            for path, file in zip(paths, files, strict=True)
            if not file.is_symlink() and re.search(rb"hostsnap[-_]lab", file.read_bytes())
        ]
        assert naming_the_lab == [], package
        if package.suffix == ".deb":
            # Debian byte-compiles private modules in postinst (dh_python3), never in the .deb.
            assert not [p for p in paths if p.endswith(".pyc")], package
            control = run("dpkg-deb", "--info", str(package)).stdout
            assert not re.search(r"hostsnap[-_]lab", control), package
            assert "does not coordinate" not in control, package
        # The launchers put the private directory first on sys.path, then call the entry point.
        launchers = {
            "/usr/bin/hostsnap-agent": "agent.main",
            "/usr/bin/hostsnap": "agent.cli",
            "/usr/bin/hostsnap-controller": "controller.main",
            "/usr/libexec/hostsnap/hostsnap-qemu-hook": "agent",
        }
        for launcher, module in launchers.items():
            if launcher in paths:
                lines = (root / launcher.lstrip("/")).read_text().splitlines()
                assert lines[0] == "#!/usr/bin/python3 -I", launcher
                first = lines.index(f'sys.path.insert(0, "{PRIVATE}")')
                then = next(line for line in lines[first + 1 :] if line)
                assert then.startswith(f"from {module} import "), launcher


def test_lintian_reports_no_errors_or_warnings_on_the_debs(built: Built):
    lint = run("lintian", "--fail-on", "error,warning", *map(str, built.debs()))
    assert lint.returncode == 0, lint.stdout + lint.stderr
    assert not [line for line in lint.stdout.splitlines() if line.startswith(("E:", "W:"))]


def test_the_controller_deb_needs_no_hypervisor_package(built: Built):
    depends = run("dpkg-deb", "--field", str(built.controller_deb), "Depends").stdout
    assert "hostsnap-common (= 0.1.0)" in depends
    assert "python3-grpcio" in depends and "python3-sqlalchemy" in depends
    assert not re.search(r"libvirt|rados|rbd|qemu|ceph|hostsnap-agent", depends), depends
    conffiles = run("dpkg-deb", "--info", str(built.controller_deb), "conffiles").stdout.split()
    assert str(CONTROLLER_CONFIG) in conffiles


def test_installed_programs_run_on_debians_own_python_libraries(
    installed: list[str], tmp_path: Path
):
    assert {
        "/usr/bin/hostsnap-agent",
        "/usr/bin/hostsnap",
        "/usr/bin/hostsnap-controller",
        "/etc/hostsnap/agent.toml",
        "/etc/libvirt/hooks/qemu.d/hostsnap",
        str(AGENT_UNIT),
        "/etc/logrotate.d/hostsnap-agent",
        "/usr/share/man/man8/hostsnap.8.gz",
        "/usr/share/man/man8/hostsnap-controller.8.gz",
        str(CONTROLLER_CONFIG),
        str(CONTROLLER_UNIT),
        f"{PRIVATE}/agent/main.py",
        f"{PRIVATE}/hostsnap/agent/v1/agent_pb2.py",
        f"{PRIVATE}/controller/main.py",
    } <= set(installed)
    # Nothing of the project where Python looks by default; dh_python3's postinst
    # byte-compiled the private directory (checked before anything here runs a program).
    assert not [f for f in installed if f.startswith(PUBLIC_DIRS)]
    for name in IMPORT_PACKAGES:
        assert not os.path.lexists(f"/usr/lib/python3/dist-packages/{name}"), name
    tag = run(SYSTEM_PYTHON, "-c", "import sys; print(sys.implementation.cache_tag)").stdout
    for module in ("agent/main", "agent/cli", "controller/main", "hostsnap/agent/v1/agent_pb2"):
        folder, name = module.rsplit("/", 1)
        compiled = Path(PRIVATE, folder, "__pycache__", f"{name}.{tag.strip()}.pyc")
        assert compiled.is_file(), compiled
    assert not [f for f in installed if f.endswith(".pyc")]  # made on the host, not shipped
    # The distribution's Python alone (no launcher) finds none of the installed files: the
    # private directory is on no default sys.path (no .pth file puts it there either).
    hidden = subprocess.run(
        [
            SYSTEM_PYTHON,
            "-I",
            "-c",
            "import importlib.util, json, sys\n"
            f"specs = [importlib.util.find_spec(n) for n in {IMPORT_PACKAGES!r}]\n"
            "print(json.dumps([sys.path, [s.origin for s in specs if s]]))",
        ],
        cwd=tmp_path,
        env=DISTRO_ENV,
        capture_output=True,
        text=True,
    )
    assert hidden.returncode == 0, hidden.stderr
    default_path, origins = json.loads(hidden.stdout)
    assert PRIVATE not in default_path
    assert not set(origins) & set(installed), origins
    assert run("/usr/bin/hostsnap-agent", "--version").stdout == "hostsnap-agent 0.1.0\n"
    assert run("/usr/bin/hostsnap-controller", "--version").stdout == "hostsnap-controller 0.1.0\n"
    usage = run("/usr/bin/hostsnap", "--help")
    assert usage.returncode == 0 and "snapshot" in usage.stdout and "Exit codes" in usage.stdout
    assert run("/usr/bin/hostsnap-agent", "--check-config").returncode == 0
    # Where each import comes from, as the installed agent sees it (its launcher's sys.path).
    found = imported_from(
        tmp_path,
        "agent, grpc, google.protobuf, libvirt, psutil, prometheus_client, rados, rbd,"
        " hostsnap.agent.v1.agent_pb2 as pb",
        ours="agent, pb",
        theirs="grpc, google.protobuf, libvirt, psutil, prometheus_client, rados, rbd",
        extra="'grpc': grpc.__version__, 'protobuf': google.protobuf.__version__",
    )
    assert found["grpc"].startswith("1.51.") and found["protobuf"].startswith(("3.21.", "4.21."))
    assert run("systemd-analyze", "verify", "--man=no", str(AGENT_UNIT)).returncode == 0
    # The controller's imports, as its launcher sees them: its code and the stubs (from
    # hostsnap-common) private, the libraries Debian's.
    found = imported_from(
        tmp_path,
        "controller.main, controller.agents, grpc, google.protobuf, sqlalchemy, alembic,"
        " hostsnap.agent.v1.agent_pb2_grpc as stubs",
        ours="controller.main, stubs",
        theirs="grpc, google.protobuf, sqlalchemy, alembic",
        extra="'sqlalchemy': sqlalchemy.__version__, 'libvirt': 'libvirt' in sys.modules",
    )
    assert found["sqlalchemy"].startswith("1.4.") and not found["libvirt"], found
    # A configuration the hook cannot read must not stop the host's domains from starting.
    original = AGENT_CONFIG.read_text()
    AGENT_CONFIG.write_text("[agent\n")
    try:
        hook = subprocess.run(
            ["/etc/libvirt/hooks/qemu.d/hostsnap", "any", "prepare", "begin", "-"],
            input="<domain><name>any</name></domain>",
            env=DISTRO_ENV,
            capture_output=True,
            text=True,
        )
    finally:
        AGENT_CONFIG.write_text(original)
    assert hook.returncode == 0, hook.stderr


def as_controller_user(*argv: str) -> list[str]:
    """`argv` as the controller unit's User= and Group=, without root's other groups."""
    return [
        "setpriv",
        f"--reuid={CONTROLLER_USER}",
        f"--regid={CONTROLLER_USER}",
        "--init-groups",
        "--no-new-privs",
        *argv,
    ]


def test_installed_controller_answers_from_cloudstack_and_its_store(
    installed: list[str], tmp_path: Path
):
    """/usr/bin/hostsnap-controller on Debian's python3, SQLAlchemy 1.4, alembic and grpcio:
    its commands, its configuration as installed (0640, the service's group), and commands
    against a CloudStack simulator and a new SQLite store, as root and as the unit's user."""
    usage = run("/usr/bin/hostsnap-controller", "--help")
    assert usage.returncode == 0, usage.stderr
    assert all(re.search(rf"(?m)^    {c}\b", usage.stdout) for c in CONTROLLER_COMMANDS), usage
    for command in CONTROLLER_COMMANDS:
        help_ = run("/usr/bin/hostsnap-controller", command, "--help")
        assert help_.returncode == 0 and "--config" in help_.stdout, (command, help_.stderr)
    assert run("/usr/bin/hostsnap-controller").returncode == 2  # no command
    missing = run("/usr/bin/hostsnap-controller", "status", "--config", "/nonexistent")
    assert missing.returncode == os.EX_CONFIG, missing.stderr

    # The installed configuration: a conffile readable by root and the service's group only.
    stat = CONTROLLER_CONFIG.stat()
    assert (stat.st_uid, oct(stat.st_mode & 0o7777)) == (0, "0o640")
    group = run("getent", "group", CONTROLLER_USER).stdout.split(":")
    assert group[0] == CONTROLLER_USER and stat.st_gid == int(group[2])
    user = run("getent", "passwd", CONTROLLER_USER).stdout.split(":")
    assert user[0] == CONTROLLER_USER and user[5] == "/var/lib/hostsnap-controller", user
    assert run(*as_controller_user("test", "-r", str(CONTROLLER_CONFIG))).returncode == 0
    nobody = ["setpriv", "--reuid=nobody", "--regid=nogroup", "--clear-groups"]
    assert run(*nobody, "test", "-r", str(CONTROLLER_CONFIG)).returncode != 0
    # It parses (no unknown key) and asks for the secret key it names.
    unconfigured = run("/usr/bin/hostsnap-controller", "status")
    assert unconfigured.returncode == os.EX_CONFIG and "secret_key_file" in unconfigured.stderr
    assert Path("/var/lib/hostsnap-controller").is_dir()  # the default store's directory

    # The unit: the package's user, a store directory of its own; installed, not enabled.
    unit = CONTROLLER_UNIT.read_text()
    assert f"User={CONTROLLER_USER}" in unit and "StateDirectory=hostsnap-controller" in unit
    assert "ExecStart=/usr/bin/hostsnap-controller serve" in unit
    assert not list(Path("/etc/systemd/system").glob("*.wants/hostsnap-controller.service"))
    if shutil.which("systemd-analyze"):
        verify = run("systemd-analyze", "verify", "--man=no", str(CONTROLLER_UNIT))
        assert verify.returncode == 0, verify.stdout + verify.stderr

    shared = Path(tempfile.mkdtemp(prefix="package-controller-"))  # reachable by the user
    try:
        with CloudStackSimulator() as sim:
            secret = shared / "secret-key"
            secret.write_text(sim.secret_key + "\n")
            config = shared / "controller.toml"
            config.write_text(
                f'[cloudstack]\nurl = "{sim.url}"\napi_key = "{sim.api_key}"\n'
                f'secret_key_file = "{secret}"\n'
                f'[store]\nurl = "sqlite:///{tmp_path / "controller.db"}"\n'
            )
            controller = ["/usr/bin/hostsnap-controller"]
            status = run(*controller, "status", "--json", "--config", str(config))
            assert status.returncode == 0, status.stderr
            seen = json.loads(status.stdout)
            assert seen["cloudstack"]["reachable"] is True, seen
            assert seen["cloudstack"]["hosts"] > 0 and seen["cloudstack"]["vms"] > 0, seen
            assert seen["leader"] is None and set(seen["jobs"].values()) == {0}, seen
            added = run(
                *controller, "policies", "add", "nightly", "--cron", "30 2 * * *",
                "--maxsnaps", "3", "--vm", "web-1", "--json", "--config", str(config),
            )  # fmt: skip
            assert added.returncode == 0, added.stderr
            listed = run(*controller, "policies", "--json", "--config", str(config))
            assert [p["name"] for p in json.loads(listed.stdout)] == ["nightly"], listed
            plan = run(*controller, "plan", "--json", "--config", str(config))
            assert plan.returncode == 0, plan.stderr
            assert "nightly" in plan.stdout

            # As the service's user: the configuration and the secret key readable through
            # its group only (the package's model), the secret's path from the environment,
            # its store in a directory of its own.
            store = shared / "store"
            store.mkdir(mode=0o700)
            shutil.chown(store, CONTROLLER_USER, CONTROLLER_USER)
            config.write_text(
                f'[cloudstack]\nurl = "{sim.url}"\napi_key = "{sim.api_key}"\n'
                f'[store]\nurl = "sqlite:///{store / "controller.db"}"\n'
            )
            for path, mode in ((shared, 0o750), (config, 0o640), (secret, 0o640)):
                shutil.chown(path, "root", CONTROLLER_USER)
                path.chmod(mode)
            as_user = subprocess.run(
                as_controller_user(*controller, "status", "--json", "--config", str(config)),
                env={**DISTRO_ENV, "HOSTSNAP_CONTROLLER_CLOUDSTACK_SECRET_KEY_FILE": str(secret)},
                capture_output=True,
                text=True,
                timeout=120,
            )
            assert as_user.returncode == 0, as_user.stderr
            assert json.loads(as_user.stdout)["cloudstack"]["reachable"] is True
            assert (store / "controller.db").stat().st_uid != 0
    finally:
        shutil.rmtree(shared, ignore_errors=True)


def test_installed_packages_leave_the_development_venv_its_own_code(installed: list[str]):
    """The venv (--system-site-packages) sees /usr/lib/python3/dist-packages before its
    editable install's finder; with the packages installed its imports and its `hostsnap`
    still come from the checkout."""
    venv = Path(sys.prefix)
    assert venv != Path(sys.base_prefix), "the tests run from the development venv"
    where = subprocess.run(
        [
            sys.executable,
            "-c",
            "import json, agent, controller, hostsnap.agent.v1.agent_pb2 as pb\n"
            "print(json.dumps([m.__file__ for m in (agent, controller, pb)]))",
        ],
        cwd="/",
        env=DISTRO_ENV,
        capture_output=True,
        text=True,
    )
    assert where.returncode == 0, where.stderr
    assert json.loads(where.stdout) == [
        str(REPO / "agent" / "__init__.py"),
        str(REPO / "controller" / "__init__.py"),
        str(REPO / "proto" / "hostsnap" / "agent" / "v1" / "agent_pb2.py"),
    ]
    for command in ("hostsnap", "hostsnap-agent"):
        version = run(str(venv / "bin" / command), "--version")
        assert version.returncode == 0, version.stderr


@pytest.fixture
def package_domain(lab: Lab, conn: libvirt.virConnect) -> Iterator[libvirt.virDomain]:
    """A running lab guest of this test's own: vda a qcow2 file (its /data), vdb on RBD."""
    rbd = ["rbd", "-c", str(lab.ceph_conf)]

    def remove() -> None:
        domains.remove(conn, NAME)
        subprocess.run([*rbd, "snap", "purge", f"rbd/{NAME}"], capture_output=True)
        subprocess.run([*rbd, "rm", "--no-progress", f"rbd/{NAME}"], capture_output=True)
        for made in lab.paths.pool.glob(f"{NAME}*"):
            made.unlink()
        lab.paths.console_log(NAME).unlink(missing_ok=True)

    remove()  # what an interrupted run left
    qcow2 = lab.paths.pool / f"{NAME}.qcow2"
    subprocess.run(
        ["qemu-img", "convert", "-O", "qcow2", str(lab.paths.base_disk), str(qcow2)], check=True
    )
    subprocess.run([*rbd, "create", "--size", "64M", f"rbd/{NAME}"], check=True)
    domains.define_and_start(
        conn, lab.paths, domains.LabDomain(NAME, qcow2_and_rbd_disks(lab, qcow2, NAME))
    )
    dom = conn.lookupByName(NAME)
    wait_for_agent(dom)
    yield dom
    remove()


@pytest.fixture
def state_dir(lab: Lab) -> Iterator[Path]:
    """The installed agent's state: a temporary directory QEMU can reach (it opens the RBD
    disk's temporary overlay there), so in the lab's directory rather than under /tmp."""
    state = Path(tempfile.mkdtemp(prefix="package-test-", dir=lab.paths.root))
    state.chmod(0o755)
    yield state
    shutil.rmtree(state, ignore_errors=True)


def capability_drops(unit: Path) -> str:
    """The unit's `CapabilityBoundingSet=~...` as setpriv's --bounding-set argument."""
    line = next(x for x in unit.read_text().splitlines() if x.startswith("CapabilityBoundingSet=~"))
    return ",".join("-" + cap.removeprefix("CAP_").lower() for cap in line.split("~")[1].split())


@dataclass(frozen=True)
class Listeners:
    socket: str
    endpoint: str  # mutual TLS; ctl-viewer.crt/.key in the directory is a viewer
    metrics: str


def start_installed_agent(
    lab: Lab, directory: Path, state: Path
) -> tuple[subprocess.Popen[bytes], Listeners]:
    """/usr/bin/hostsnap-agent with a configuration of its own, the capabilities its unit
    leaves it and no new privileges; its socket and certificates in `directory`."""
    ca = make_ca(directory, "test-ca")
    make_cert(directory, ca, "agent", "IP:127.0.0.1")
    make_cert(directory, ca, "ctl-viewer", "DNS:ctl-viewer")
    listen = Listeners(
        socket=str(directory / "run" / "agent.sock"),
        endpoint=f"127.0.0.1:{free_port()}",
        metrics=f"127.0.0.1:{free_port()}",
    )
    config = directory / "agent.toml"
    config.write_text(
        f'[agent]\nstate_dir = "{state}"\nceph_conf = "{lab.ceph_conf}"\n'
        f'[listen]\nunix_socket = "{listen.socket}"\ntcp = "{listen.endpoint}"\n'
        f'metrics = "{listen.metrics}"\n'
        f'[tls]\ncert = "{directory / "agent.crt"}"\nkey = "{directory / "agent.key"}"\n'
        f'client_ca = "{ca[1]}"\n'
        '[roles]\nctl-viewer = "viewer"\n'
        f'[audit]\nlog = "{directory / "audit.log"}"\n'
    )
    process = subprocess.Popen(
        [
            "setpriv",
            "--no-new-privs",
            f"--bounding-set={capability_drops(AGENT_UNIT)}",
            "/usr/bin/hostsnap-agent",
            "--config",
            str(config),
        ],
        cwd=directory,
        env=DISTRO_ENV,
        stdout=(directory / "agent.log").open("wb"),
        stderr=subprocess.STDOUT,
    )
    deadline = time.monotonic() + 30
    try:
        while not (directory / "run" / "agent.sock").exists():
            assert process.poll() is None, (directory / "agent.log").read_text()
            assert time.monotonic() < deadline, "the installed hostsnap-agent opened no socket"
            time.sleep(0.1)
    except AssertionError:
        process.kill()
        raise
    return process, listen


def stop(process: subprocess.Popen[bytes]) -> int:
    process.send_signal(signal.SIGTERM)
    try:
        return process.wait(timeout=90)
    except subprocess.TimeoutExpired:
        process.kill()
        raise


def test_installed_agent_and_cli_take_a_snapshot_and_the_hook_refuses_the_old_layer(
    installed: list[str],
    lab: Lab,
    conn: libvirt.virConnect,
    package_domain: libvirt.virDomain,
    state_dir: Path,
    tmp_path: Path,
):
    recorded = package_domain.XMLDesc(libvirt.VIR_DOMAIN_XML_INACTIVE)  # CloudStack's copy
    old_path = disk_source(package_domain)
    agent, listen = start_installed_agent(lab, tmp_path, state_dir)
    sock = listen.socket
    try:
        status = run("/usr/bin/hostsnap", "--socket", sock, "status")
        assert status.returncode == 0 and "libvirt" in status.stdout, status.stderr
        created = run(
            "/usr/bin/hostsnap",
            "--socket",
            sock,
            "--json",
            "snapshot",
            "create",
            NAME,
            "--quiesce",
            "required",
        )
        assert created.returncode == 0, created.stderr
        job = json.loads(created.stdout)
        assert job["state"] == "JOB_STATE_SUCCEEDED"
        assert job["snapshot"]["consistency"] == "CONSISTENCY_APPLICATION"
        disks = {d["target"]: d for d in job["snapshot"]["disks"]}
        assert set(disks) == {"vda", "vdb"}  # the qcow2 file and the RBD image
        listed = run("/usr/bin/hostsnap", "--socket", sock, "snapshots", NAME)
        assert listed.returncode == 0, listed.stderr
        rows = listed.stdout.splitlines()[1:]
        for disk in disks.values():
            assert any(row.startswith(disk["snapshot_id"]) for row in rows), listed.stdout
        # Mutual TLS (the controller's way in) on Debian's grpcio: a viewer reads, and may
        # not take a snapshot.
        remote = [
            "/usr/bin/hostsnap",
            f"--endpoint={listen.endpoint}",
            f"--cert={tmp_path / 'ctl-viewer.crt'}",
            f"--key={tmp_path / 'ctl-viewer.key'}",
            f"--ca={tmp_path / 'test-ca.crt'}",
        ]
        jobs = run(*remote, "--json", "jobs")
        assert jobs.returncode == 0, jobs.stderr
        assert [j["id"] for j in json.loads(jobs.stdout)] == [job["id"]]
        denied = run(*remote, "snapshot", "create", NAME, "--no-wait")
        assert denied.returncode == 6, denied.stderr  # not allowed
        # Served by Debian's python3-prometheus-client.
        with urllib.request.urlopen(f"http://{listen.metrics}/metrics", timeout=30) as response:
            exposed = response.read().decode()
        assert re.search(rf'(?m)^hostsnap_disk_operations_total\{{.*domain="{NAME}"', exposed)
        assert 'hostsnap_job_duration_seconds_count{operation="snapshot"' in exposed
    finally:
        assert stop(agent) == 0, (tmp_path / "agent.log").read_text()
    log = (tmp_path / "agent.log").read_text()
    # Debian 12 packages neither: the agent serves without them and says so.
    assert "grpcio-health-checking is not installed" in log
    assert "grpcio-reflection is not installed" in log

    # CloudStack starts the domain again from the path it recorded: the installed hook, with
    # the agent's state_dir in /etc/hostsnap/agent.toml, makes libvirt refuse.
    AGENT_CONFIG.write_text(
        re.sub(r"(?m)^state_dir = .*$", f'state_dir = "{state_dir}"', AGENT_CONFIG.read_text())
    )
    package_domain.destroy()
    conn.defineXML(recorded)
    with pytest.raises(libvirt.libvirtError) as refused:
        package_domain.create()
    assert f"hostsnap: refusing to start {NAME}: disk vda points at {old_path}" in str(
        refused.value
    )
    assert f"the active image is {disks['vda']['active_image']}" in str(refused.value)
    conn.defineXML(with_disk_source(recorded, "vda", disks["vda"]["active_image"]))
    package_domain.create()  # from its active image it starts
    assert package_domain.isActive()


def test_purge_removes_every_file_the_packages_installed(installed: list[str]):
    hook = Path("/etc/libvirt/hooks/qemu.d/hostsnap")
    assert hook.is_symlink()
    purge = apt_get("purge", *PACKAGES)
    assert purge.returncode == 0, purge.stdout + purge.stderr
    assert installed_packages() == []
    assert [f for f in installed if os.path.lexists(f)] == []
    for directory in (
        "/etc/hostsnap",
        "/var/lib/hostsnap",
        "/var/lib/hostsnap-controller",
        "/var/log/hostsnap",
        "/usr/libexec/hostsnap",
        PRIVATE,
        "/usr/lib/python3/dist-packages/agent",
        "/usr/lib/python3/dist-packages/hostsnap",
        "/usr/lib/python3/dist-packages/controller",
        "/etc/systemd/system/multi-user.target.wants/hostsnap-agent.service",
    ):
        assert not os.path.lexists(directory), directory
    assert Path("/etc/libvirt/hooks/qemu").exists()  # the lab's hook stays


def imported_from(cwd: Path, imports: str, *, ours: str, theirs: str, extra: str) -> dict:
    """Imports `imports` as the installed launchers do (the private directory first, then
    Debian's); checks `ours` come from the private directory and `theirs` from Debian's
    dist-packages, and returns the probe's findings with the `extra` entries."""
    probe = (
        f"import sys\nsys.path.insert(0, {PRIVATE!r})\nimport json, {imports}\n"
        f"ours = ({ours},)\ntheirs = ({theirs},)\n"
        "print(json.dumps({'ours': [m.__file__ for m in ours],"
        f" 'theirs': [m.__file__ for m in theirs], {extra}}}))"
    )
    seen = subprocess.run(
        [SYSTEM_PYTHON, "-I", "-c", probe], cwd=cwd, env=DISTRO_ENV, capture_output=True, text=True
    )
    assert seen.returncode == 0, seen.stderr
    found = json.loads(seen.stdout)
    assert all(f.startswith(f"{PRIVATE}/") for f in found["ours"]), found
    assert all(f.startswith("/usr/lib/python3/dist-packages/") for f in found["theirs"]), found
    return found
