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
from collections.abc import Iterator
from pathlib import Path
from typing import TextIO, TypeGuard

DEFAULT_LAYERS = Path("/var/lib/hostsnap/layers.json")


class CorruptMap(ValueError):
    """The layer map is not what the agent writes: {stale path: {"active": path, ...}}."""


def parse_layers(text: str) -> dict[str, str]:
    """The map's stale paths with their active image; CorruptMap (one line) otherwise."""
    try:
        raw = json.loads(text)
    except (ValueError, RecursionError) as e:
        raise CorruptMap(f"not JSON: {_one_line(e)}") from None
    if not isinstance(raw, dict):
        raise CorruptMap(f"{_json_kind(raw)} instead of an object")
    layers: dict[str, str] = {}
    for path, entry in raw.items():
        if not isinstance(entry, dict):
            raise CorruptMap(f"entry {_short(path)} is {_json_kind(entry)}, not an object")
        active = entry.get("active")
        if not _is_path(path):
            raise CorruptMap(f"entry {_short(path)} is not an absolute path")
        if not _is_path(active):
            raise CorruptMap(f"entry {_short(path)} has no absolute active path: {_short(active)}")
        layers[path] = active
    return layers


def _is_path(value: object) -> TypeGuard[str]:
    if not isinstance(value, str) or not value.startswith("/") or "\0" in value:
        return False
    try:
        os.fsencode(value)
    except UnicodeError:
        return False
    return True


def _json_kind(value: object) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, int | float):
        return "a number"
    return "a string" if isinstance(value, str) else "an array"


def _short(value: object) -> str:
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _one_line(error: BaseException) -> str:
    return " ".join(str(error).split()) or type(error).__name__


def _identity(path: str) -> tuple[int, int] | None:
    try:
        info = os.stat(path)
    except (OSError, ValueError):
        return None
    return info.st_dev, info.st_ino


class StaleLayers:
    """Finds a disk's stale layer however its path is spelt: the same file by device and
    inode (a symlinked directory, `//`, `/./`, a hard link), or for a file that no longer
    exists by its resolved real path. The map's files are looked at only when a disk's path
    is not one of the map's own."""

    def __init__(self, layers: dict[str, str]) -> None:
        self._layers = layers
        self._by_identity: dict[tuple[int, int], list[str]] | None = None
        self._by_real_path: dict[str, list[str]] | None = None

    def find(self, disk_path: str) -> tuple[str, str] | None:
        """(the recorded stale path, its active image) when the disk's file is one."""
        for path in self._same_file(disk_path):
            active = self._layers[path]
            # A record whose active image is gone is obsolete (the volume was removed and
            # made anew): it must not block a start.
            if os.path.exists(active):
                return path, active
        return None

    def _same_file(self, disk_path: str) -> Iterator[str]:
        if disk_path in self._layers:
            yield disk_path
        identity = _identity(disk_path)
        if identity is not None:
            if self._by_identity is None:
                self._by_identity = {}
                for path in self._layers:
                    found = _identity(path)
                    if found is not None:
                        self._by_identity.setdefault(found, []).append(path)
            yield from self._by_identity.get(identity, [])
            return
        if self._by_real_path is None:
            self._by_real_path = {}
            for path in self._layers:
                self._by_real_path.setdefault(os.path.realpath(path), []).append(path)
        yield from self._by_real_path.get(os.path.realpath(disk_path), [])


def _file_disks(root: ET.Element) -> list[tuple[str, str]]:
    """(target dev, source file) of each disk with a file source.

    Only the top source counts: a disk's <backingStore> elements name the layers below its
    image, and every layer below an active image is a stale layer by definition (it is no
    longer written to). Refusing those would refuse every domain with a snapshot."""
    disks = []
    for disk in root.findall("devices/disk"):
        source, target = disk.find("source"), disk.find("target")
        path = source.get("file") if source is not None else None
        if path:
            disks.append((target.get("dev", "?") if target is not None else "?", path))
    return disks


def refusals(domain_xml: str, layers: dict[str, str]) -> list[str]:
    """One message per disk whose source is a stale layer."""
    root = ET.fromstring(domain_xml)
    name = root.findtext("name", "?")
    stale = StaleLayers(layers)
    messages = []
    for dev, path in _file_disks(root):
        found = stale.find(path)
        if found is None:
            continue
        recorded, active = found
        named = path if recorded == path else f"{path} (the same file as {recorded})"
        messages.append(
            f"hostsnap: refusing to start {name}: disk {dev} points at {named}, which is no "
            f"longer its active image; the active image is {active} "
            "(update the disk's path, e.g. CloudStack's volume path, to it)"
        )
    return messages


def main(argv: list[str], stdin: TextIO, stderr: TextIO) -> int:
    layers_file = DEFAULT_LAYERS
    if len(argv) >= 2 and argv[0] == "--layers":
        layers_file, argv = Path(argv[1]), argv[2:]
    if len(argv) < 3 or (argv[1], argv[2]) != ("prepare", "begin"):
        return 0
    domain = argv[0]
    try:
        domain_xml = stdin.read()
        root = ET.fromstring(domain_xml)
    except (ET.ParseError, ValueError) as e:
        print(f"hostsnap: refusing to start {domain}: its XML does not parse ({e})", file=stderr)
        return 1
    if not _file_disks(root):
        return 0  # layers are files: a domain without file disks has none to be stale
    try:
        layers = parse_layers(layers_file.read_text())
    except FileNotFoundError:
        return 0  # the agent has written no map: it knows of no layer
    except (OSError, UnicodeError, CorruptMap) as e:
        # A map that cannot be read or is not the agent's refuses the start: without it a
        # stale layer would boot and silently drop the writes made since its snapshot, while
        # a refused start loses nothing and says what to do. The agent writes the map
        # atomically, so this is damage from outside, and the agent's start mends it.
        print(
            f"hostsnap: refusing to start {domain}: the stale-layer map {layers_file} is "
            f"unusable ({_one_line(e)}), so hostsnap cannot tell whether a disk points at a "
            "stale layer; restarting hostsnap-agent writes it anew from its journal",
            file=stderr,
        )
        return 1
    messages = refusals(domain_xml, layers)
    for message in messages:
        print(message, file=stderr)
    return 1 if messages else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:], sys.stdin, sys.stderr))
