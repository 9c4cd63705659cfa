"""Checks on names and ids that come from callers, before anything is looked up."""

from __future__ import annotations

import re

from agent.errors import InvalidArgument

MAX_NAME = 200
_SNAPSHOT_ID = re.compile(r"^[0-9a-f]{32}$")
_SNAPSHOT_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._ -]*$")
_GROUP_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_DISK = re.compile(r"^[a-z]{2,3}[a-z]{1,3}$")  # vda, sdb, hdc, vdaa
# A Ceph pool or RBD image name as hostsnap accepts it (CloudStack's are names and UUIDs).
_RBD_PART = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,199}$")


def domain_name(name: str) -> str:
    if not name or len(name) > MAX_NAME:
        raise InvalidArgument(f"a domain name has 1 to {MAX_NAME} characters, got {len(name)}")
    if "/" in name or ".." in name or any(ord(c) < 32 for c in name):
        raise InvalidArgument(f"domain name {name!r} may not contain '/', '..' or control chars")
    return name


def disk_target(target: str) -> str:
    if not _DISK.match(target):
        raise InvalidArgument(f"disk {target!r} is not a target device name such as vda or sdb")
    return target


def rbd_image(spec: str) -> tuple[str, str]:
    """(pool, image) of a "pool/image" name."""
    pool, slash, image = spec.partition("/")
    if not slash or not all(_RBD_PART.match(p) and ".." not in p for p in (pool, image)):
        raise InvalidArgument(
            f"RBD image {spec!r} is not \"pool/image\" (each up to 200 letters, digits, '.', "
            "'_' or '-', starting with a letter or digit, without '..')",
            reason="INVALID_IMAGE_NAME",
        )
    return pool, image


def job_id(value: str) -> str:
    if not _SNAPSHOT_ID.match(value):
        raise InvalidArgument(f"job id {value!r} is not a hostsnap id (32 hex digits)")
    return value


def snapshot_id(value: str) -> str:
    if not _SNAPSHOT_ID.match(value):
        raise InvalidArgument(f"snapshot id {value!r} is not a hostsnap id (32 hex digits)")
    return value


def snapshot_name(name: str) -> str:
    if len(name) > MAX_NAME or (name and (".." in name or not _SNAPSHOT_NAME.match(name))):
        raise InvalidArgument(
            f"snapshot name {name!r}: up to {MAX_NAME} letters, digits, '.', '_', '-' or spaces, "
            "starting with a letter or digit, without '..'"
        )
    return name


def group_id(value: str) -> str:
    if not _GROUP_ID.match(value):
        raise InvalidArgument(
            f"group id {value!r}: 1 to 128 letters, digits, '.', '_' or '-'",
            reason="INVALID_GROUP_ID",
        )
    return value


_TARGET = re.compile(r"^[a-z0-9][a-z0-9_-]{0,62}$")


def target_name(name: str) -> str:
    if not _TARGET.match(name):
        raise InvalidArgument(
            f"backup target {name!r}: 1 to 63 lower-case letters, digits, '_' or '-', starting "
            "with a letter or digit",
            reason="INVALID_TARGET_NAME",
        )
    return name


def backup_id(value: str) -> str:
    if not _SNAPSHOT_ID.match(value):
        raise InvalidArgument(
            f"backup id {value!r} is not a hostsnap id (32 hex digits)", reason="INVALID_BACKUP_ID"
        )
    return value


def new_image_path(path: str) -> str:
    """An absolute path for a new image: no '..', no control characters."""
    parts = path.split("/")
    if not path.startswith("/") or ".." in parts or any(ord(c) < 32 for c in path):
        raise InvalidArgument(
            f"{path!r} is not an absolute path without '..'", reason="INVALID_PATH"
        )
    return path
