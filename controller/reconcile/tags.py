"""The snapshot tags hostsnap writes on a volume: when it was last snapshotted and how
consistent that snapshot is.

CloudStack keeps one tag per key and refuses to create a key the resource has, so the old
tags are deleted first, by key alone: a `tags[i].value` that is sent, even empty, must match
the tag's value (server/src/main/java/com/cloud/tags/TaggedResourceManagerImpl.java). A
delete that finds nothing is the first time, not an error; CloudStack says so with 530
"Failed to delete tags" (DeleteTagsCmd.execute) or, in older releases, 431 "Unable to find
any tags which conform to specified delete parameters."."""

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
from controller.cloudstack.params import strip_control_characters

log = logging.getLogger(__name__)

LAST_SNAPSHOT = "hostsnap-last-snapshot"
CONSISTENCY = "hostsnap-consistency"
PARAM_ERROR, INTERNAL_ERROR = 431, 530
UNKNOWN = "unknown"
_NOT_FOUND = {PARAM_ERROR: "unable to find any tags", INTERNAL_ERROR: "failed to delete tags"}
_ALREADY_THERE = "already on"


def iso_utc(when: datetime) -> str:
    """UTC ISO 8601 to the second: 2026-11-25T18:55:22Z."""
    return when.astimezone(UTC).replace(microsecond=0).strftime("%Y-%m-%dT%H:%M:%SZ")


def tag_value(text: str) -> str:
    """A value CloudStack accepts: no control characters, never empty."""
    return strip_control_characters(text).strip() or UNKNOWN


def snapshot_tags(taken_at: datetime, consistency: str) -> dict[str, str]:
    return {LAST_SNAPSHOT: iso_utc(taken_at), CONSISTENCY: tag_value(consistency)}


def _says(exc: CloudStackError, code: int, text: str) -> bool:
    if isinstance(exc, CloudStackJobFailed | CloudStackApiError):
        return exc.errorcode == code and text in exc.errortext.lower()
    return False


def _not_found(exc: CloudStackError) -> bool:
    return any(_says(exc, code, text) for code, text in _NOT_FOUND.items())


async def _delete(
    cloudstack: CloudStackClient, resource_type: str, resource_id: str, keys: list[str]
) -> None:
    log.info("deleting tags %s of %s %s before writing them", keys, resource_type, resource_id)
    try:
        await cloudstack.delete_tags(resource_type, [resource_id], keys)
    except CloudStackError as exc:
        if not _not_found(exc):
            raise
        log.debug("%s %s had none of the tags %s", resource_type, resource_id, keys)


async def replace_tags(
    cloudstack: CloudStackClient, resource_type: str, resource_id: str, tags: Mapping[str, str]
) -> None:
    """Sets `tags` on the resource, replacing the values of those keys. Raises the
    CloudStackError of a delete or create that failed otherwise than "not found". A create
    that meets a key written meanwhile (530 "tag ... already on ...") deletes and writes once
    more."""
    keys = sorted(tags)
    await _delete(cloudstack, resource_type, resource_id, keys)
    log.info("tagging %s %s with %s", resource_type, resource_id, dict(tags))
    try:
        await cloudstack.create_tags(resource_type, [resource_id], tags)
    except CloudStackError as exc:
        if not _says(exc, INTERNAL_ERROR, _ALREADY_THERE):
            raise
        log.warning("%s %s: %s; deleting and writing again", resource_type, resource_id, exc)
        await _delete(cloudstack, resource_type, resource_id, keys)
        await cloudstack.create_tags(resource_type, [resource_id], tags)
