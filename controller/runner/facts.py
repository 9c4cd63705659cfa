"""Tags and owners for selection, read from CloudStack only when a policy needs them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from controller import policies
from controller.cloudstack.projects import list_everyone, tag_key
from controller.inventory import ListSource
from controller.policies.caps import config_key


async def read_caps(source: ListSource, *, timeout: float = 120.0) -> policies.RetentionCaps:
    """CloudStack's snapshot.max.* settings (CloudStackError when they cannot be read: then
    nothing may be deleted by retention)."""
    keys = [config_key(kind) for kind in policies.IntervalType]
    found = await asyncio.gather(
        *(source.list_all("listConfigurations", {"name": key}, timeout=timeout) for key in keys)
    )
    values = {
        str(record.get("name")): str(record.get("value", ""))
        for records in found
        for record in records
        if record.get("name") in keys
    }
    return policies.RetentionCaps.from_config(values)


async def read_facts(
    source: ListSource, wanted: Iterable[policies.Policy], *, timeout: float = 120.0
) -> policies.ResourceFacts | None:
    """None when no policy selects by tag or account (nothing is read)."""
    chosen = list(wanted)
    need_tags = any(p.selector.tags for p in chosen)
    need_owners = any(p.selector.accounts or p.selector.domains for p in chosen)
    if not (need_tags or need_owners):
        return None
    tags = owned = None
    if need_tags:
        tags = await list_everyone(source, "listTags", key=tag_key, timeout=timeout)
    if need_owners:
        vms, volumes = await asyncio.gather(
            list_everyone(source, "listVirtualMachines", timeout=timeout),
            list_everyone(source, "listVolumes", timeout=timeout),
        )
        owned = [*vms, *volumes]
    return policies.ResourceFacts.from_api(tags=tags, owned=owned)
