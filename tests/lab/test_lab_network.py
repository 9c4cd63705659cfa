"""The lab is reachable from this machine only: its daemons and guests listen on loopback."""

from __future__ import annotations

import ipaddress
from pathlib import Path

import psutil

from hostsnap_lab import ceph
from hostsnap_lab.lab import Lab
from hostsnap_lab.paths import QCOW2_DOMAIN, RBD_DOMAIN


def qemu_pid(domain: str) -> int:
    return int(Path(f"/run/libvirt/qemu/{domain}.pid").read_text().strip())


def test_the_labs_daemons_and_guests_listen_on_loopback_only(lab: Lab):
    pids = {name: ceph.daemon_pid(lab.paths, name) for name in ceph.DAEMONS}
    assert None not in pids.values(), pids
    pids |= {domain: qemu_pid(domain) for domain in (QCOW2_DOMAIN, RBD_DOMAIN)}
    listening = [
        (owner, c.laddr.ip, c.laddr.port)
        for c in psutil.net_connections(kind="inet")
        if c.status == psutil.CONN_LISTEN
        for owner, pid in pids.items()
        if c.pid == pid
    ]

    assert {owner for owner, _, _ in listening} >= set(ceph.DAEMONS)  # the test sees them
    beyond = [entry for entry in listening if not ipaddress.ip_address(entry[1]).is_loopback]
    assert not beyond, f"listening beyond loopback: {beyond}"
