"""The libvirt `qemu` hook: refuses to start a domain whose disk points at an image that
hostsnap knows is no longer that disk's active image (a stale snapshot layer).

CloudStack starts VMs from the path it recorded; after an external snapshot that path is a
read-only snapshot layer, and booting from it would silently drop every write made since.
Standard library only: libvirtd runs it with the system Python for every domain start.

Installed as /etc/libvirt/hooks/qemu (a wrapper that passes --layers); libvirt calls it as
`qemu DOMAIN OPERATION SUB-OPERATION EXTRA` with the domain XML on standard input.
"""

from __future__ import annotations

import json
import os
import sys
import xml.etree.ElementTree as ET
from pathlib import Path
from typing import TextIO

DEFAULT_LAYERS = Path("/var/lib/hostsnap/layers.json")


def refusals(domain_xml: str, stale: dict[str, dict[str, str]]) -> list[str]:
    """One message per disk whose source is a stale layer."""
    messages = []
    root = ET.fromstring(domain_xml)
    name = root.findtext("name", "?")
    for disk in root.findall("devices/disk"):
        source = disk.find("source")
        target = disk.find("target")
        path = source.get("file") if source is not None else None
        # A record whose active image is gone is obsolete (the volume was removed and made
        # anew): it must not block a start.
        if path and path in stale and os.path.exists(stale[path]["active"]):
            dev = target.get("dev") if target is not None else "?"
            messages.append(
                f"hostsnap: refusing to start {name}: disk {dev} points at {path}, which is no "
                f"longer its active image; the active image is {stale[path]['active']} "
                "(update the disk's path, e.g. CloudStack's volume path, to it)"
            )
    return messages


def main(argv: list[str], stdin: TextIO, stderr: TextIO) -> int:
    layers = DEFAULT_LAYERS
    if len(argv) >= 2 and argv[0] == "--layers":
        layers, argv = Path(argv[1]), argv[2:]
    if len(argv) < 3 or (argv[1], argv[2]) != ("prepare", "begin"):
        return 0
    try:
        stale = json.loads(layers.read_text())
    except FileNotFoundError:
        return 0
    except (OSError, ValueError) as e:
        # A map that cannot be read must not stop every guest on the host from starting.
        print(
            f"hostsnap: warning: {layers} unreadable ({e}); stale layers not checked", file=stderr
        )
        return 0
    messages = refusals(stdin.read(), stale)
    for message in messages:
        print(message, file=stderr)
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], sys.stdin, sys.stderr))
