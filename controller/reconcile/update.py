"""Telling CloudStack a volume's new active image (updateVolume `path`), and checking that
it now says so."""

from __future__ import annotations

import logging

from controller.cloudstack import CloudStackClient, CloudStackError
from controller.reconcile.lease import LeaseCheck

log = logging.getLogger(__name__)


class UpdateFailed(Exception):
    """updateVolume failed, or CloudStack does not record the path asked for."""


async def update_path(
    cloudstack: CloudStackClient,
    volume_id: str,
    new_path: str,
    leading: LeaseCheck,
) -> str:
    """Sets the volume's path; raises UpdateFailed (LeaseLost when the lease ran out)."""
    leading()
    log.info("updateVolume %s: path -> %s", volume_id, new_path)
    try:
        volume = await cloudstack.update_volume(volume_id, path=new_path)
    except CloudStackError as exc:
        raise UpdateFailed(f"updateVolume {volume_id} path={new_path} failed: {exc}") from exc
    recorded = volume.get("path")
    if recorded != new_path:
        raise UpdateFailed(
            f"updateVolume {volume_id}: CloudStack records path {recorded!r}, not {new_path!r}"
        )
    return f"CloudStack records path {new_path}"
