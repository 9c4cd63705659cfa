"""Real images for the engine's fast tests: qcow2 chains made with the real qemu-img in a
temporary directory, and guest writes and reads of a marker with the real qemu-io.

A marker is one byte value written over one 64 KiB cluster at an offset of its own (marker n
at n * 64 KiB), so several markers live side by side and a read says whether the image, with
its backing chain, holds that marker's data."""

from __future__ import annotations

import json
import subprocess

CLUSTER = 64 * 1024
SIZE = 4 * 1024 * 1024  # virtual size of every test disk: 64 markers
MAX_MARKER = SIZE // CLUSTER - 1


def run(*argv: str) -> subprocess.CompletedProcess[str]:
    done = subprocess.run(list(argv), capture_output=True, text=True, timeout=60)
    if done.returncode != 0:
        raise AssertionError(f"{' '.join(argv)}: exit {done.returncode}: {done.stderr}")
    return done


def create(path: str, backing: str | None = None, backing_format: str = "qcow2") -> None:
    """A qcow2 image, on `backing` when given (as the agent names it: absolute path)."""
    if backing is None:
        run("qemu-img", "create", "-q", "-f", "qcow2", path, str(SIZE))
    else:
        run("qemu-img", "create", "-q", "-f", "qcow2", "-F", backing_format, "-b", backing, path)


def chain(path: str) -> list[str]:
    """The image's backing chain, active first (the images must all open)."""
    out = run("qemu-img", "info", "-U", "--backing-chain", "--output=json", path).stdout
    return [entry["filename"] for entry in json.loads(out)]


def without_backing(path: str) -> str:
    """A qcow2 image opened alone (its backing, e.g. an rbd: one, never opened)."""
    spec = {"driver": "qcow2", "file": {"driver": "file", "filename": path}, "backing": None}
    return "json:" + json.dumps(spec)


def _check(marker: int) -> None:
    assert 1 <= marker <= MAX_MARKER, marker


def write(image: str, marker: int, fmt: str = "qcow2", value: int | None = None) -> None:
    """The guest writes `marker` through `image` (an image name or a json: spec); with
    `value`, other data (that byte) over the marker's place."""
    _check(marker)
    command = f"write -P {marker if value is None else value} {marker * CLUSTER} {CLUSTER}"
    argv = ["qemu-io", "-c", command, image]
    if not image.startswith("json:"):
        argv[1:1] = ["-f", fmt]
    run(*argv)


def reads(image: str, marker: int, fmt: str = "qcow2", value: int | None = None) -> bool:
    """Whether `image` (with its chain) reads `marker`'s data (or `value`) at its place."""
    _check(marker)
    command = f"read -P {marker if value is None else value} {marker * CLUSTER} {CLUSTER}"
    argv = ["qemu-io", "-r", "-U", "-c", command, image]
    if not image.startswith("json:"):
        argv[1:1] = ["-f", fmt]
    done = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    return done.returncode == 0 and "verification failed" not in done.stdout


def has_own_data(image: str) -> bool:
    out = run("qemu-img", "map", "-U", "--output=json", image).stdout
    return any(e.get("data") and e.get("depth") == 0 for e in json.loads(out))


def commit(top: str, base: str) -> None:
    """What QEMU's block commit does to the files: `top` (and the images between) written
    into `base`; `top` keeps its data (-d), as a live commit leaves it."""
    run("qemu-img", "commit", "-q", "-d", "-f", "qcow2", "-b", base, top)


def rebase_unsafe(path: str, backing: str, backing_format: str) -> None:
    run("qemu-img", "rebase", "-u", "-f", "qcow2", "-F", backing_format, "-b", backing, path)


def pull(path: str) -> None:
    """What QEMU's block pull does: every backing layer's data copied into `path`."""
    run("qemu-img", "rebase", "-f", "qcow2", "-b", "", path)
