"""From an agent's active image to the `path` CloudStack records for the volume.

CloudStack's KVM volumes record, for file pools, the image's file name within the pool's
directory (NetworkFilesystem pools are mounted at `/mnt/<pool uuid>` on the host;
SharedMountPoint and Filesystem pools are the directory in the pool's `path`), and for RBD
the image's name within the Ceph pool (the pool's `path`). hostsnap's overlays sit next to
the image they were made on and are named `<original file name>.hostsnap-<32 hex>`.

Only a path that can be justified is ever given out: the recorded image itself or a hostsnap
overlay of the volume's original image, in the volume's pool. Anything else is refused.
"""

from __future__ import annotations

import posixpath
import re

from controller.inventory import StoragePool

OVERLAY = re.compile(r"^(?P<original>.+)\.hostsnap-[0-9a-f]{32}$")
NFS_MOUNT_PARENT = "/mnt"  # where CloudStack's KVM agent mounts NFS pools (by pool uuid)


class PathRefused(ValueError):
    """The agent's active image cannot be justified as the volume's: no path is written."""


def original_name(name: str) -> str:
    """A file name without hostsnap's overlay suffix: the volume's original image."""
    match = OVERLAY.match(name)
    return match["original"] if match else name


def is_overlay(name: str) -> bool:
    return OVERLAY.match(name) is not None


def same_volume(location: str, recorded: str) -> bool:
    """Whether the agent's disk at `location` is the volume CloudStack records at `recorded`:
    the same image, or a hostsnap overlay of the same original (wherever the file lives)."""
    if not location or not recorded:
        return False
    if location == recorded:
        return True
    name = posixpath.basename(location)
    return original_name(name) == original_name(posixpath.basename(recorded))


def pool_directories(pool: StoragePool) -> tuple[str, ...]:
    """The directories a file pool's images may be in on a KVM host."""
    found = [posixpath.join(NFS_MOUNT_PARENT, pool.id)] if pool.type == "NetworkFilesystem" else []
    if pool.path:
        found.append(pool.path)
    return tuple(posixpath.normpath(d) for d in found)


def cloudstack_path(active_image: str, pool: StoragePool, recorded: str) -> str:
    """The `path` CloudStack must record for a volume (now recorded as `recorded`) whose
    active image the agent reports as `active_image`. Raises PathRefused when it cannot be
    justified."""
    if not recorded:
        raise PathRefused("CloudStack records no path for the volume: nothing to compare with")
    if pool.is_rbd:
        return _rbd_path(active_image, pool, recorded)
    if pool.is_file:
        return _file_path(active_image, pool, recorded)
    raise PathRefused(f"pool {pool.name} is of type {pool.type!r}, neither files nor RBD")


def _rbd_path(active_image: str, pool: StoragePool, recorded: str) -> str:
    ceph_pool, _, image = active_image.partition("/")
    if not image or ceph_pool != pool.path:
        raise PathRefused(
            f"RBD image {active_image!r} is not in Ceph pool {pool.path!r} of pool {pool.name}"
        )
    if image != recorded:
        raise PathRefused(
            f"RBD image {image!r} is not the recorded {recorded!r}; hostsnap never changes "
            "the image an RBD volume uses"
        )
    return image


def _file_path(active_image: str, pool: StoragePool, recorded: str) -> str:
    if not posixpath.isabs(active_image):
        raise PathRefused(f"active image {active_image!r} is not an absolute file path")
    image = posixpath.normpath(active_image)
    directory, name = posixpath.split(image)
    absolute = posixpath.isabs(recorded)
    allowed: tuple[str, ...] = pool_directories(pool)
    if absolute:
        allowed = (posixpath.dirname(posixpath.normpath(recorded)), *allowed)
    if directory not in allowed:
        raise PathRefused(
            f"active image {image} is outside pool {pool.name}'s directory "
            f"({' or '.join(allowed) or 'unknown'})"
        )
    recorded_name = posixpath.basename(recorded)
    # The recorded image, a hostsnap overlay of its original, or the original itself (a
    # merge took the overlays away again).
    own = name == recorded_name or original_name(name) == original_name(recorded_name)
    if not own:
        raise PathRefused(
            f"active image {name} is neither the recorded {recorded_name} nor a hostsnap "
            f"overlay of {original_name(recorded_name)}"
        )
    return image if absolute else name
