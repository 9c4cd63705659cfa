"""What the reconcile package needs of CloudStack: `CloudStackClient` provides it."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Protocol

from controller.cloudstack import JsonObject


class CloudStackPort(Protocol):
    async def update_volume(
        self,
        volume_id: str,
        *,
        path: str | None = None,
        state: str | None = None,
        storage_id: str | None = None,
        chain_info: str | None = None,
        timeout: float | None = None,
    ) -> JsonObject: ...

    async def create_tags(
        self,
        resource_type: str,
        resource_ids: list[str],
        tags: Mapping[str, str],
        *,
        timeout: float | None = None,
    ) -> None: ...

    async def delete_tags(
        self,
        resource_type: str,
        resource_ids: list[str],
        tags: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
    ) -> None: ...

    async def list_all(
        self,
        command: str,
        params: Mapping[str, str] | None = None,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> list[JsonObject]: ...
