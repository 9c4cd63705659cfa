"""Runs a package's maintainer scripts as they were built, on a pretend systemd host: every
program they call that acts on the machine (systemctl, deb-systemd-helper, adduser, chown,
py3compile, hostsnap-agent, ...) is a shim on PATH that records its arguments and answers as
the host's units are (enabled, active). deb-systemd-invoke is Debian's own, with no
policy-rc.d, so its decisions (no start for a disabled unit) are the real ones; only the
`systemctl` it runs is a shim. The scripts' test for a systemd host, /run/systemd/system, is
pointed at a directory of the fake host."""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

SHIMMED = (
    "systemctl", "deb-systemd-helper", "adduser", "dpkg-statoverride", "chown", "chmod",
    "install", "py3compile", "py3clean", "getent", "groupadd", "useradd", "hostsnap-agent",
)  # fmt: skip
SHIM = """#!/usr/bin/python3
import json, os, sys
name, args = os.path.basename(sys.argv[0]), sys.argv[1:]
with open(os.environ["FAKE_HOST_LOG"], "a") as log:
    log.write(json.dumps([name, *args]) + "\\n")
enabled = os.environ["FAKE_HOST_ENABLED"].split()
active = os.environ["FAKE_HOST_ACTIVE"].split()
unit = args[-1] if args else ""
if name == "systemctl" and "is-enabled" in args:
    print("enabled" if unit in enabled else "disabled")
    sys.exit(0 if unit in enabled else 1)
if name == "systemctl" and "is-active" in args:
    sys.exit(0 if unit in active else 3)
if name == "deb-systemd-helper" and "was-enabled" in args:
    sys.exit(0 if unit in enabled else 1)
if name == "hostsnap-agent":
    sys.exit(int(os.environ["FAKE_HOST_AGENT_EXIT"]))
"""
# What systemctl does to a unit, as opposed to what it is asked about.
ACTIONS = {"start", "stop", "restart", "try-restart", "reload", "try-reload-or-restart"}
ACTIONS |= {"enable", "disable", "preset"}


@dataclass
class FakeHost:
    root: Path
    enabled: set[str] = field(default_factory=set)
    active: set[str] = field(default_factory=set)
    agent_exit: int = 0

    def __post_init__(self) -> None:
        self.bin = self.root / "bin"
        self.bin.mkdir(parents=True)
        (self.root / "run" / "systemd" / "system").mkdir(parents=True)
        self.log = self.root / "calls.jsonl"
        self.log.touch()
        for name in SHIMMED:
            (self.bin / name).write_text(SHIM)
            (self.bin / name).chmod(0o755)
        invoke = self.bin / "deb-systemd-invoke"
        invoke.write_text(
            f'#!/bin/sh\nDPKG_ROOT="{self.root}" exec /usr/bin/deb-systemd-invoke "$@"\n'
        )
        invoke.chmod(0o755)

    def run(self, script: str, *args: str) -> None:
        """Runs one script (its text) with the arguments dpkg or rpm would give it."""
        path = self.root / "script"
        path.write_text(script.replace("/run/systemd/system", f"{self.root}/run/systemd/system"))
        env = {
            "PATH": f"{self.bin}:/usr/sbin:/usr/bin:/sbin:/bin",
            "LANG": "C.UTF-8",
            "FAKE_HOST_LOG": str(self.log),
            "FAKE_HOST_ENABLED": " ".join(sorted(self.enabled)),
            "FAKE_HOST_ACTIVE": " ".join(sorted(self.active)),
            "FAKE_HOST_AGENT_EXIT": str(self.agent_exit),
        }
        done = subprocess.run(
            ["/bin/sh", "-e", str(path), *args], env=env, capture_output=True, text=True
        )
        assert done.returncode == 0, f"{args}: {done.stdout}{done.stderr}"

    def calls(self) -> list[list[str]]:
        return [json.loads(line) for line in self.log.read_text().splitlines()]

    def actions(self, units: Iterable[str]) -> list[tuple[str, ...]]:
        """What the scripts did to these units, in order: (verb, unit) for systemctl,
        ("hostsnap-agent", *args) for the agent's own command."""
        wanted = set(units)
        done: list[tuple[str, ...]] = []
        for name, *args in self.calls():
            if name == "hostsnap-agent":
                done.append((name, *args))
            elif name == "systemctl":
                verbs = [a for a in args if a in ACTIONS]
                done += [(verbs[0], a) for a in args if verbs and a in wanted]
        return done


def deb_scripts(deb: Path, into: Path) -> dict[str, str]:
    """The maintainer scripts of a .deb, by name (preinst, postinst, prerm, postrm)."""
    subprocess.run(["dpkg-deb", "--control", str(deb), str(into)], check=True)
    names = ("preinst", "postinst", "prerm", "postrm")
    return {n: (into / n).read_text() for n in names if (into / n).exists()}


def rpm_scriptlets(rpm: Path) -> dict[str, str]:
    """The scriptlets of an .rpm, by rpm's tag (PREIN, POSTIN, PREUN, POSTUN); "" if none."""
    found = {}
    for tag in ("PREIN", "POSTIN", "PREUN", "POSTUN"):
        text = subprocess.run(
            ["rpm", "-qp", "--qf", f"%{{{tag}}}", str(rpm)],
            capture_output=True,
            text=True,
            check=True,
            env={**os.environ, "LANG": "C"},
        ).stdout
        found[tag] = "" if text == "(none)" else text
    return found
