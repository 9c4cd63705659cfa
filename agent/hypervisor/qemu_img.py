"""qemu-img, wrapped once: each function builds an argv; `run` turns a failure into an error
carrying the command, exit code and stderr."""

from __future__ import annotations

import json
import logging
import os
import re
import struct
import subprocess
import time
from collections.abc import Callable, Sequence
from typing import Any

from agent.errors import NotFound, OperationFailed, Precondition
from agent.model import Layer

log = logging.getLogger(__name__)

TIMEOUT = 3600.0


def run(argv: Sequence[str], timeout: float = TIMEOUT) -> str:
    log.debug("running %s", " ".join(argv))
    try:
        done = subprocess.run(list(argv), capture_output=True, text=True, timeout=timeout)
    except subprocess.TimeoutExpired as e:
        raise OperationFailed(f"{' '.join(argv)} did not finish within {timeout:.0f} s") from e
    if done.returncode != 0:
        raise OperationFailed(
            f"{' '.join(argv)} failed with exit code {done.returncode}: {done.stderr.strip()}"
        )
    return done.stdout


def chain(path: str) -> list[Layer]:
    """The backing chain of an image, active first; -U reads images a running QEMU holds."""
    out = _read_info(path, "--backing-chain")
    return [_layer(entry) for entry in json.loads(out)]


def info(path: str) -> Layer:
    """One image alone (cheaper than its chain when only its own facts are needed)."""
    return _layer(json.loads(_read_info(path)))


def _read_info(path: str, *extra: str) -> str:
    """qemu-img info; an image that is not there is NotFound, a chain with a layer missing
    below it is a broken chain (both states of the disk, not failures of the agent)."""
    try:
        return run(["qemu-img", "info", *extra, "-U", "--output=json", path], timeout=60)
    except OperationFailed as e:
        if not os.path.lexists(path):
            raise NotFound(f"image {path} does not exist", reason="IMAGE_MISSING") from e
        if "Could not open" in str(e):
            raise Precondition(
                f"the backing chain of {path} cannot be read: {e}", reason="CHAIN_BROKEN"
            ) from e
        raise


def _layer(entry: dict[str, Any]) -> Layer:
    return Layer(
        path=entry["filename"],
        format=entry["format"],
        virtual_size=int(entry["virtual-size"]),
        actual_size=int(entry.get("actual-size", 0)),
        backing=entry.get("full-backing-filename") or entry.get("backing-filename"),
    )


QCOW2_MAGIC = b"QFI\xfb"
QCOW2_MAX_BACKING_NAME = 1023  # bytes; qemu refuses longer names
PROTOCOL = re.compile(r"^[a-z0-9+]+:")  # rbd:pool/image, json:{...}, nbd:...


def backing_file(path: str) -> str | None:
    """The backing file named in a qcow2 image's header (a relative name resolved against the
    image's directory, as qemu-img does); None for any other file. Read from the header
    itself: a scan of a pool directory asks this of every file there, and one qemu-img
    process per file costs seconds in a directory of a hundred volumes."""
    with open(path, "rb") as image:
        header = image.read(20)
        if len(header) < 20 or header[:4] != QCOW2_MAGIC:
            return None
        offset, size = struct.unpack(">QI", header[8:20])
        if not offset or not size or size > QCOW2_MAX_BACKING_NAME:
            return None
        image.seek(offset)
        name = image.read(size).decode("utf-8", "replace")
    if os.path.isabs(name) or PROTOCOL.match(name):
        return name
    return os.path.join(os.path.dirname(path), name)


def has_own_data(path: str) -> bool:
    """True when the image holds data of its own (not only what its backing file provides)."""
    out = run(["qemu-img", "map", "-U", "--output=json", path], timeout=300)
    return any(e.get("data") and e.get("depth") == 0 for e in json.loads(out))


def create_overlay(path: str, backing: str) -> None:
    """An empty qcow2 image whose backing file is `backing` (recorded by absolute path), of
    the same size. -u with an explicit size: the backing chain is not opened again, which
    would cost more with every layer."""
    top = info(backing)
    _create_unsafe(path, backing, top.format, top.virtual_size)


def create_overlay_over_rbd(path: str, backing: str, size: int) -> None:
    """An empty qcow2 image over a raw RBD image, `backing` in qemu's `rbd:pool/image:...`
    form (never opened here: the running QEMU already has the image open)."""
    _create_unsafe(path, backing, "raw", size)


def _create_unsafe(path: str, backing: str, backing_format: str, size: int) -> None:
    options = ["-q", "-u", "-f", "qcow2", "-F", backing_format, "-b", backing]
    run(["qemu-img", "create", *options, path, str(size)])


def commit(
    top: str, base: str | None = None, progress: Callable[[float], None] | None = None
) -> None:
    """Writes `top`'s data (and that of the layers between) into `base`, by default its
    backing file (offline only). The images between are invalid afterwards."""
    options = ["-b", base] if base else []
    run_with_progress(["qemu-img", "commit", "-p", "-f", "qcow2", *options, top], progress)


def flatten(path: str, progress: Callable[[float], None] | None = None) -> None:
    """Copies every backing layer's data into `path`, which then has no backing file."""
    run_with_progress(["qemu-img", "rebase", "-p", "-f", "qcow2", "-b", "", path], progress)


def run_with_progress(
    argv: Sequence[str], progress: Callable[[float], None] | None, timeout: float = TIMEOUT
) -> None:
    """Runs a qemu-img command with -p, telling `progress` each "(n.nn/100%)" it prints."""
    log.debug("running %s", " ".join(argv))
    proc = subprocess.Popen(list(argv), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert proc.stdout is not None and proc.stderr is not None
    deadline = time.monotonic() + timeout
    unread = b""  # a line cut by the end of a read is completed by the next one
    while chunk := os.read(proc.stdout.fileno(), 4096):
        lines = (unread + chunk).split(b"\r")
        unread = lines.pop()
        percents = re.findall(rb"\((\d+(?:\.\d+)?)/100%\)", b"\r".join(lines))
        if progress is not None and percents:
            progress(float(percents[-1]) / 100)
        if time.monotonic() > deadline:
            proc.kill()
            proc.wait()
            raise OperationFailed(f"{' '.join(argv)} did not finish within {timeout:.0f} s")
    stderr = proc.stderr.read().decode(errors="replace").strip()
    if proc.wait() != 0:
        raise OperationFailed(f"{' '.join(argv)} failed with exit code {proc.returncode}: {stderr}")


def rebase_unsafe(path: str, backing: str, backing_format: str) -> None:
    """Points `path` at a new backing file without copying: only when both hold equal data."""
    run(["qemu-img", "rebase", "-u", "-f", "qcow2", "-F", backing_format, "-b", backing, path])
