"""Listing every account's records, projects' included.

`listall=true` alone skips the resources of projects (SkipProjectResources when no
`projectid` is given). `projectid=-1` lists project resources; with `listall=true` newer
releases add every other resource (ListAllIncludingProjectResources), older ones list the
project resources only (ListProjectResourcesOnly): AccountManagerImpl.
buildACLSearchParameters in server/src/main/java/com/cloud/user/AccountManagerImpl.java, which
QueryManagerImpl's searches (server/src/main/java/com/cloud/api/query/QueryManagerImpl.java,
e.g. searchForVolumeIdsAndCount) call with the command's `projectid` and `listall`.
Both lists are read and merged by id, so that neither kind of release misses or doubles a
record.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable, Mapping
from typing import Protocol

from controller.cloudstack.responses import JsonObject

RecordKey = Callable[[JsonObject], Hashable]


class ListSource(Protocol):
    async def list_all(
        self,
        command: str,
        params: Mapping[str, str] | None = None,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> list[JsonObject]: ...


def by_id(record: JsonObject) -> Hashable:
    return record.get("id")


def tag_key(record: JsonObject) -> Hashable:
    """A tag has no id: one resource has one tag per key."""
    return (record.get("resourcetype"), record.get("resourceid"), record.get("key"))


async def list_everyone(
    source: ListSource,
    command: str,
    params: Mapping[str, str] | None = None,
    *,
    key: RecordKey = by_id,
    timeout: float | None = None,
) -> list[JsonObject]:
    """Every account's and every project's records of a list command, each once."""
    base = {**(params or {}), "listall": "true"}
    accounts, projects = await asyncio.gather(
        source.list_all(command, base, timeout=timeout),
        source.list_all(command, {**base, "projectid": "-1"}, timeout=timeout),
    )
    merged: dict[Hashable, JsonObject] = {}
    for record in [*accounts, *projects]:
        merged.setdefault(key(record), record)
    return list(merged.values())
