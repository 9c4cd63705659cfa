"""The asynchronous CloudStack API client: signed requests, retries, paging and async jobs.

Every public call has a monotonic deadline (`timeout` seconds, the configured default when
not given) that bounds all of its attempts, waits and job polls. Transient failures are
retried with jittered exponential backoff; a request that may have run on the server is
retried only when running it twice is harmless (reads, and writes of absolute values).
"""

from __future__ import annotations

import asyncio
import logging
import re
import ssl
import sys
import time
from collections.abc import Awaitable, Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from urllib.parse import quote, urlencode

from controller.cloudstack.errors import (
    PARAM_ERROR,
    CloudStackApiError,
    CloudStackError,
    CloudStackJobFailed,
    CloudStackJobTimeout,
    CloudStackProtocolError,
    CloudStackTimeout,
    CloudStackTransportError,
)
from controller.cloudstack.params import check_params, check_tags
from controller.cloudstack.responses import JsonObject, list_items, parse
from controller.cloudstack.retry import RetryPolicy
from controller.cloudstack.signing import signed_params
from controller.cloudstack.transport import HttpTransport, Transport, TransportFailure

log = logging.getLogger(__name__)

JOB_PENDING, JOB_SUCCEEDED, JOB_FAILED, JOB_CANCELLED = 0, 1, 2, 3
_PAGE_LIMIT = re.compile(r"max allowed page size value: (\d+)")


@dataclass(frozen=True)
class CloudStackConfig:
    """Seconds everywhere. `endpoint` is the API URL, e.g. http://mgmt:8080/client/api."""

    endpoint: str
    api_key: str
    secret_key: str = field(repr=False)
    timeout: float = 30.0  # one call, all its attempts included
    attempt_timeout: float = 15.0  # one HTTP exchange
    signature_lifetime: float = 300.0  # `expires` is now + this (CloudStack caps it at 15 min)
    page_size: int = 500  # CloudStack's default default.page.size; a lower one is learnt
    job_timeout: float = 600.0
    job_poll_interval: float = 1.0  # first wait between polls, growing to the max
    job_poll_max_interval: float = 5.0
    max_in_flight: int = 8  # concurrent HTTP exchanges (each takes a thread)
    ca_file: str | None = None  # CA bundle for https; the system's when None


def is_read(command: str) -> bool:
    """Commands that change nothing: sent as GET and retried freely."""
    return command.startswith(("list", "query"))


class CloudStackClient:
    def __init__(
        self,
        config: CloudStackConfig,
        *,
        transport: Transport | None = None,
        retry: RetryPolicy | None = None,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], Awaitable[None]] = asyncio.sleep,
        now: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        self._config = config
        if transport is None:
            context = ssl.create_default_context(cafile=config.ca_file)
            transport = HttpTransport(config.endpoint, ssl_context=context)
        self._transport = transport
        self._retry = retry if retry is not None else RetryPolicy()
        self._clock = clock
        self._sleep = sleep
        self._now = now
        self._slots = asyncio.Semaphore(config.max_in_flight)
        self._page_limit: int | None = None  # the server's default.page.size, once learnt

    @property
    def api_key(self) -> str:
        return self._config.api_key

    # -- one command -------------------------------------------------------------------

    async def request(
        self,
        command: str,
        params: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
        idempotent: bool | None = None,
    ) -> JsonObject:
        """Run `command` and return the object inside its `...response` key."""
        safe_twice = is_read(command) if idempotent is None else idempotent
        return await self._request(command, params or {}, self._deadline(timeout), safe_twice)

    async def _request(
        self, command: str, params: Mapping[str, str], deadline: float, idempotent: bool
    ) -> JsonObject:
        check_params(command, params)
        attempt = 0
        while True:
            attempt += 1
            remaining = deadline - self._clock()
            if remaining <= 0:
                raise CloudStackTimeout(f"{command}: deadline passed", command=command)
            try:
                return await self._exchange(
                    command, params, min(remaining, self._config.attempt_timeout), idempotent
                )
            except CloudStackError as exc:
                if not exc.transient:
                    raise
                if self._clock() >= deadline:
                    raise CloudStackTimeout(
                        f"{command}: no answer before the deadline ({exc})",
                        command=command,
                        last_error=exc,
                    ) from exc
                if attempt >= self._retry.attempts:
                    raise
                wait = self._retry.delay(attempt, getattr(exc, "retry_after", None))
                if self._clock() + wait >= deadline:
                    raise CloudStackTimeout(
                        f"{command}: gave up at the deadline after {attempt} attempts ({exc})",
                        command=command,
                        last_error=exc,
                    ) from exc
                log.warning(
                    "%s: attempt %d failed (%s); retrying in %.2fs", command, attempt, exc, wait
                )
                await self._sleep(wait)

    async def _exchange(
        self, command: str, params: Mapping[str, str], timeout: float, idempotent: bool
    ) -> JsonObject:
        signed = signed_params(
            {**params, "command": command, "response": "json"},
            api_key=self._config.api_key,
            secret_key=self._config.secret_key,
            now=self._now(),
            expires_in=timedelta(seconds=self._config.signature_lifetime),
        )
        query = urlencode(signed, quote_via=quote)
        method = "GET" if is_read(command) else "POST"
        log.debug("%s %s (timeout %.1fs)", method, command, timeout)
        async with self._slots:
            try:
                # The thread cannot be cancelled; its socket timeout ends it soon after.
                response = await asyncio.wait_for(
                    asyncio.to_thread(self._transport.exchange, method, query, timeout),
                    timeout + 1.0,
                )
            except TransportFailure as exc:
                raise CloudStackTransportError(
                    f"{command}: {exc}", command=command, sent=exc.sent, idempotent=idempotent
                ) from exc
            except TimeoutError as exc:
                raise CloudStackTransportError(
                    f"{command}: timed out", command=command, sent=True, idempotent=idempotent
                ) from exc
        return parse(command, response, idempotent=idempotent)

    # -- lists -------------------------------------------------------------------------

    async def list_all(
        self,
        command: str,
        params: Mapping[str, str] | None = None,
        *,
        page_size: int | None = None,
        timeout: float | None = None,
    ) -> list[JsonObject]:
        """Every record of a list command, page by page (CloudStack returns at most
        default.page.size records per call, whatever the total). A page larger than the
        server's default.page.size is refused with 431 naming the limit (BaseListCmd
        .getPageSize): the listing starts again with pages of that size, kept for later
        lists."""
        deadline = self._deadline(timeout)
        size = min(page_size or self._config.page_size, self._page_limit or sys.maxsize)
        records: list[JsonObject] = []
        seen: set[object] = set()
        page = 1
        while True:
            try:
                body = await self._request(
                    command,
                    {**(params or {}), "page": str(page), "pagesize": str(size)},
                    deadline,
                    True,
                )
            except CloudStackApiError as exc:
                limit = page_limit(exc)
                if limit is None or limit >= size:
                    raise
                log.warning("%s: pages of %d refused; listing in pages of %d", command, size, limit)
                self._page_limit = size = limit
                records, seen, page = [], set(), 1
                continue
            batch = list_items(command, body)
            fresh = 0
            for record in batch:
                key = record.get("id")
                if key is not None:
                    if key in seen:  # shifted into this page by a deletion meanwhile
                        continue
                    seen.add(key)
                records.append(record)
                fresh += 1
            total = body.get("count")
            if len(batch) < size or fresh == 0:
                return records
            if isinstance(total, int) and len(records) >= total:
                return records
            page += 1

    # -- async jobs --------------------------------------------------------------------

    async def execute_async(
        self,
        command: str,
        params: Mapping[str, str] | None = None,
        *,
        timeout: float | None = None,
        idempotent: bool = False,
    ) -> JsonObject:
        """Run an async command and wait for its job; returns the job's `jobresult`."""
        limit = self._config.job_timeout if timeout is None else timeout
        deadline = self._clock() + limit
        started = await self._request(
            command, params or {}, min(deadline, self._deadline(None)), idempotent
        )
        jobid = started.get("jobid")
        if not isinstance(jobid, str):
            raise CloudStackProtocolError(f"{command}: no jobid in {started}", command=command)
        log.info("%s: job %s started", command, jobid)
        return await self._wait(command, jobid, deadline)

    async def wait_job(
        self, jobid: str, *, timeout: float | None = None, command: str = ""
    ) -> JsonObject:
        """Wait for a job started earlier; returns its `jobresult`."""
        limit = self._config.job_timeout if timeout is None else timeout
        return await self._wait(command or "job", jobid, self._clock() + limit)

    async def _wait(self, command: str, jobid: str, deadline: float) -> JsonObject:
        interval = self._config.job_poll_interval
        while True:
            try:
                job = await self._request("queryAsyncJobResult", {"jobid": jobid}, deadline, True)
            except CloudStackTimeout as exc:
                raise CloudStackJobTimeout(
                    f"{command}: job {jobid} not finished before the deadline ({exc})",
                    command=command,
                    jobid=jobid,
                ) from exc
            status = job.get("jobstatus")
            if status == JOB_SUCCEEDED:
                result = job.get("jobresult", {})
                return result if isinstance(result, dict) else {}
            if status in (JOB_FAILED, JOB_CANCELLED):
                result = job.get("jobresult")
                error = result if isinstance(result, dict) else {}
                code, result_code = error.get("errorcode"), job.get("jobresultcode")
                raise CloudStackJobFailed(
                    command=command,
                    jobid=jobid,
                    jobstatus=int(status),
                    jobresultcode=result_code if isinstance(result_code, int) else None,
                    errorcode=code if isinstance(code, int) else None,
                    errortext=str(error.get("errortext", "")),
                )
            if status != JOB_PENDING:
                raise CloudStackProtocolError(
                    f"{command}: job {jobid} has jobstatus {status!r}", command=command
                )
            if self._clock() + interval >= deadline:
                raise CloudStackJobTimeout(
                    f"{command}: job {jobid} still running at the deadline",
                    command=command,
                    jobid=jobid,
                )
            await self._sleep(interval)
            interval = min(interval * 1.5, self._config.job_poll_max_interval)

    # -- the writes the controller makes -----------------------------------------------

    async def update_volume(
        self,
        volume_id: str,
        *,
        path: str | None = None,
        state: str | None = None,
        storage_id: str | None = None,
        chain_info: str | None = None,
        timeout: float | None = None,
    ) -> JsonObject:
        """Admin updateVolume; returns the volume as CloudStack now records it. Setting
        absolute values twice changes nothing, so it is retried like a read."""
        given = {"path": path, "state": state, "storageid": storage_id, "chaininfo": chain_info}
        params = {"id": volume_id} | {k: v for k, v in given.items() if v is not None}
        result = await self.execute_async("updateVolume", params, timeout=timeout, idempotent=True)
        volume = result.get("volume")
        if not isinstance(volume, dict):
            raise CloudStackProtocolError(f"updateVolume: no volume in {result}")
        return volume

    async def create_tags(
        self,
        resource_type: str,
        resource_ids: list[str],
        tags: Mapping[str, str],
        *,
        timeout: float | None = None,
    ) -> None:
        """CloudStack refuses an empty value (431) and a key the resource already has, in any
        case (530); `check_tags` refuses an empty value, and two keys equal but for case,
        before anything is sent."""
        check_tags(tags)
        params = {"resourcetype": resource_type, "resourceids": ",".join(resource_ids)}
        params |= _tag_map(tags)
        await self.execute_async("createTags", params, timeout=timeout)

    async def delete_tags(
        self,
        resource_type: str,
        resource_ids: list[str],
        keys: Collection[str] | None = None,
        *,
        timeout: float | None = None,
    ) -> None:
        """Deletes the tags of those keys (whatever their values); without `keys`, every tag
        of the resources. Sent without values: CloudStack matches a given value, even an
        empty one, against the tag's (TaggedResourceManagerImpl.deleteTags)."""
        params = {"resourcetype": resource_type, "resourceids": ",".join(resource_ids)}
        for index, key in enumerate(sorted(keys or ())):
            params[f"tags[{index}].key"] = key
        await self.execute_async("deleteTags", params, timeout=timeout)

    def _deadline(self, timeout: float | None) -> float:
        return self._clock() + (self._config.timeout if timeout is None else timeout)


def page_limit(exc: CloudStackApiError) -> int | None:
    """The default.page.size named by CloudStack's refusal of a larger page, if it is one."""
    match = _PAGE_LIMIT.search(exc.errortext) if exc.errorcode == PARAM_ERROR else None
    return int(match[1]) if match and int(match[1]) > 0 else None


def _tag_map(tags: Mapping[str, str]) -> dict[str, str]:
    """CloudStack's map parameter: tags[0].key=k&tags[0].value=v..."""
    params: dict[str, str] = {}
    for index, (key, value) in enumerate(sorted(tags.items())):
        params[f"tags[{index}].key"] = key
        params[f"tags[{index}].value"] = value
    return params
