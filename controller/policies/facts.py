"""What selection needs beyond the inventory's records: tags and owners of VMs and volumes.

The inventory's frozen records do not carry them (yet); listTags and the `account`,
`domainid` and `domain` fields of listVirtualMachines/listVolumes do. `None` means "not read":
a selector that needs it cannot be applied, and the plan says so instead of guessing.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from types import MappingProxyType

from controller.cloudstack import JsonObject

# listTags' resourcetype for the resources selection looks at.
TAGGED_TYPES = frozenset({"UserVm", "Volume"})


@dataclass(frozen=True)
class Owner:
    account: str
    domain_id: str
    domain: str  # the domain's name, e.g. ROOT


@dataclass(frozen=True)
class ResourceFacts:
    tags: Mapping[str, Mapping[str, str]] | None = None  # resource id -> {key: value}
    owners: Mapping[str, Owner] | None = None  # resource id -> owner

    def tags_of(self, resource_id: str | None) -> Mapping[str, str]:
        if resource_id is None or self.tags is None:
            return {}
        return self.tags.get(resource_id, {})

    def owner_of(self, resource_id: str | None) -> Owner | None:
        if resource_id is None or self.owners is None:
            return None
        return self.owners.get(resource_id)

    @classmethod
    def from_api(
        cls,
        *,
        tags: Iterable[JsonObject] | None = None,
        owned: Iterable[JsonObject] | None = None,
    ) -> ResourceFacts:
        """From listTags records and from VM and volume records (listVirtualMachines,
        listVolumes) for their owners. What is not given stays unread."""
        by_resource: dict[str, dict[str, str]] | None = None
        if tags is not None:
            by_resource = {}
            for tag in tags:
                if str(tag.get("resourcetype")) not in TAGGED_TYPES:
                    continue
                resource = by_resource.setdefault(str(tag.get("resourceid")), {})
                resource[str(tag.get("key"))] = str(tag.get("value") or "")
        owners: dict[str, Owner] | None = None
        if owned is not None:
            owners = {
                str(r.get("id")): Owner(
                    account=str(r.get("account", "")),
                    domain_id=str(r.get("domainid", "")),
                    domain=str(r.get("domain", "")),
                )
                for r in owned
            }
        return cls(
            tags=None
            if by_resource is None
            else MappingProxyType({k: MappingProxyType(v) for k, v in by_resource.items()}),
            owners=None if owners is None else MappingProxyType(owners),
        )
