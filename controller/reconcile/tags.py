"""The snapshot tags hostsnap writes on a volume: when it was last snapshotted and how
consistent that snapshot is. CloudStack's createTags refuses a key the resource already has,
so the old value is deleted first; "no such tag" is the first time, not an error."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from datetime import UTC, datetime

from controller.cloudstack import (
    CloudStackApiError,
    CloudStackClient,
    CloudStackError,
    CloudStackJobFailed,
)

log = logging.getLogger(__name__)

LAST_SNAPSHOT = "hostsnap-last-snapshot"
CONSISTENCY = "hostsnap-consistency"
PARAM_ERROR = 431
_NOT_FOUND_TEXT = "unable to find any tags"


def iso_utc(when: datetime) -> str:
    """UTC ISO 8601 to the second: 2026-11-25T18:55:22Z."""
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def snapshot_tags(taken_at: datetime, consistency: str) -> dict[str, str]:
    return {LAST_SNAPSHOT: iso_utc(taken_at), CONSISTENCY: consistency}


def _not_found(exc: CloudStackError) -> bool:
    if isinstance(exc, CloudStackJobFailed | CloudStackApiError):
        code = exc.errorcode
        return code == PARAM_ERROR and _NOT_FOUND_TEXT in exc.errortext.lower()
    return False


async def replace_tags(
    cloudstack: CloudStackClient, resource_type: str, resource_id: str, tags: Mapping[str, str]
) -> None:
    """Sets `tags` on the resource, replacing the values of those keys. Raises the
    CloudStackError of a delete or create that failed otherwise than "not found"."""
    log.info(
        "deleting tags %s of %s %s before writing them", sorted(tags), resource_type, resource_id
    )
    try:  # one call: CloudStack deletes those of the keys the resource has
        await cloudstack.delete_tags(resource_type, [resource_id], dict.fromkeys(tags, ""))
    except CloudStackError as exc:
        if not _not_found(exc):
            raise
        log.debug("%s %s had none of the tags %s", resource_type, resource_id, sorted(tags))
    log.info("tagging %s %s with %s", resource_type, resource_id, dict(tags))
    await cloudstack.create_tags(resource_type, [resource_id], tags)
