"""Keeps CloudStack's view of the zone: refreshed on an interval and on demand. A failed
refresh keeps the last good inventory, and says so (in the log and in `status`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime

from controller.cloudstack import CloudStackError, JsonObject
from controller.cloudstack.projects import ListSource, list_everyone
from controller.inventory.model import (
    Host,
    InventorySnapshot,
    InventoryStatus,
    StoragePool,
    VirtualMachine,
    Volume,
    Zone,
    by_id,
)

log = logging.getLogger(__name__)


class InventoryUnavailable(CloudStackError):
    """No refresh has succeeded yet, so there is no inventory to give."""


class Inventory:
    def __init__(
        self,
        source: ListSource,
        *,
        zone_id: str | None = None,
        interval: float = 60.0,
        refresh_timeout: float = 120.0,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._source = source
        self._zone_id = zone_id
        self._interval = interval
        self._refresh_timeout = refresh_timeout
        self._sleep = sleep
        self._now = now
        self._clock = clock
        self._current: InventorySnapshot | None = None
        self._last_error: str | None = None
        self._failures = 0
        self._inflight: asyncio.Future[InventorySnapshot] | None = None

    @property
    def snapshot(self) -> InventorySnapshot:
        """The last good inventory (perhaps stale: see `status`)."""
        if self._current is None:
            raise InventoryUnavailable(
                f"no CloudStack inventory yet: {self._last_error or 'never refreshed'}"
            )
        return self._current

    @property
    def status(self) -> InventoryStatus:
        fetched = self._current.fetched_at if self._current else None
        return InventoryStatus(fetched, self._last_error, self._failures)

    async def refresh(self) -> InventorySnapshot:
        """Read CloudStack now. Callers arriving during a refresh share it. On failure the
        last good inventory stays in use and the CloudStackError is raised."""
        if self._inflight is None or self._inflight.done():
            self._inflight = asyncio.ensure_future(self._refresh_once())
            self._inflight.add_done_callback(_consume_exception)
        return await asyncio.shield(self._inflight)

    async def run(self, stop: asyncio.Event | None = None) -> None:
        """Refresh every `interval` seconds until `stop` is set (or the task is cancelled)."""
        while stop is None or not stop.is_set():
            with contextlib.suppress(CloudStackError):  # logged and kept in `status`
                await self.refresh()
            await self._sleep(self._interval)

    async def _refresh_once(self) -> InventorySnapshot:
        started = self._clock()
        try:
            snapshot = await self._fetch()
        except CloudStackError as exc:
            self._failures += 1
            self._last_error = str(exc)
            if self._current is None:
                log.error("inventory refresh failed (%s); no inventory yet", exc)
            else:
                age = (self._now() - self._current.fetched_at).total_seconds()
                log.warning(
                    "inventory refresh failed (%s, %d in a row); keeping the inventory "
                    "read at %s (%.0fs old)",
                    exc,
                    self._failures,
                    self._current.fetched_at.isoformat(),
                    age,
                )
            raise
        self._current, self._last_error, self._failures = snapshot, None, 0
        log.info(
            "inventory refreshed in %.2fs: %d hosts, %d pools, %d VMs, %d volumes (%d busy)",
            self._clock() - started,
            len(snapshot.hosts),
            len(snapshot.pools),
            len(snapshot.vms),
            len(snapshot.volumes),
            len(snapshot.busy_volumes()),
        )
        return snapshot

    async def _fetch(self) -> InventorySnapshot:
        zone = {"zoneid": self._zone_id} if self._zone_id else {}
        fetched_at = self._now()
        timeout = self._refresh_timeout
        # type=Routing: hypervisor hosts only, not the system VMs' host records;
        # details=min: what the inventory reads is outside every other detail (ListVMsCmd,
        # ListHostsCmd; listVolumes and listStoragePools take no `details`); VMs and volumes
        # of every account and project (list_everyone).
        reads: list[Awaitable[list[JsonObject]]] = [
            self._source.list_all(
                "listZones", {"id": self._zone_id} if self._zone_id else {}, timeout=timeout
            ),
            self._source.list_all(
                "listHosts", {"type": "Routing", "details": "min", **zone}, timeout=timeout
            ),
            self._source.list_all("listStoragePools", dict(zone), timeout=timeout),
            list_everyone(
                self._source, "listVirtualMachines", {"details": "min", **zone}, timeout=timeout
            ),
            list_everyone(self._source, "listVolumes", dict(zone), timeout=timeout),
        ]
        tasks = [asyncio.ensure_future(read) for read in reads]
        try:
            zones, hosts, pools, vms, volumes = await asyncio.gather(*tasks)
        except BaseException:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            raise
        return InventorySnapshot(
            zones=by_id([Zone.from_api(r) for r in zones]),
            hosts=by_id([Host.from_api(r) for r in hosts]),
            pools=by_id([StoragePool.from_api(r) for r in pools]),
            vms=by_id([VirtualMachine.from_api(r) for r in vms]),
            volumes=by_id([Volume.from_api(r) for r in volumes]),
            fetched_at=fetched_at,
        )


def _consume_exception(future: asyncio.Future[InventorySnapshot]) -> None:
    # Its waiters see the exception; this only stops asyncio's "never retrieved" warning
    # when every waiter was cancelled first.
    if not future.cancelled():
        future.exception()
