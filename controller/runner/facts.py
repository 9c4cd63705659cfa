"""Tags and owners for selection, read from CloudStack only when a policy needs them."""

from __future__ import annotations

import asyncio
from collections.abc import Iterable

from controller import policies
from controller.inventory import ListSource


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
        tags = await source.list_all("listTags", {"listall": "true"}, timeout=timeout)
    if need_owners:
        vms, volumes = await asyncio.gather(
            source.list_all("listVirtualMachines", {"listall": "true"}, timeout=timeout),
            source.list_all("listVolumes", {"listall": "true"}, timeout=timeout),
        )
        owned = [*vms, *volumes]
    return policies.ResourceFacts.from_api(tags=tags, owned=owned)
