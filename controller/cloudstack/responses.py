"""Reading CloudStack's JSON answers: `{"<command>response": {...}}`, errors inside it."""

from __future__ import annotations

import json
from typing import Any

from controller.cloudstack.errors import (
    UNAUTHORIZED,
    CloudStackApiError,
    CloudStackAuthError,
    CloudStackProtocolError,
)
from controller.cloudstack.transport import HttpResponse

JsonObject = dict[str, Any]


def parse(command: str, response: HttpResponse, *, idempotent: bool) -> JsonObject:
    """The object inside the `...response` key, or the error CloudStack reported."""
    inner = _unwrap(response.body)
    retry_after = _retry_after(response.headers.get("retry-after"))
    if inner is not None and "errorcode" in inner:
        errorcode = _int(inner.get("errorcode"), None) or response.status
        error_class = CloudStackAuthError if errorcode == UNAUTHORIZED else CloudStackApiError
        raise error_class(
            command=command,
            errorcode=errorcode,
            cserrorcode=_int(inner.get("cserrorcode"), None),
            errortext=str(inner.get("errortext", "")),
            http_status=response.status,
            idempotent=idempotent,
            retry_after=retry_after,
        )
    if response.status != 200:
        # Not CloudStack's own error body: a proxy's page, or an empty answer.
        error_class = CloudStackAuthError if response.status == UNAUTHORIZED else CloudStackApiError
        raise error_class(
            command=command,
            errorcode=response.status,
            errortext=_snippet(response.body) or f"HTTP {response.status}",
            http_status=response.status,
            idempotent=idempotent,
            retry_after=retry_after,
        )
    if inner is None:
        raise CloudStackProtocolError(
            f"{command}: the answer is not a CloudStack JSON response: {_snippet(response.body)!r}",
            command=command,
        )
    return inner


def list_items(command: str, body: JsonObject) -> list[JsonObject]:
    """The records of one list page. CloudStack leaves the list key out when it is empty
    (`{}` when nothing matched, `{"count": N}` past the last page)."""
    lists = [value for key, value in body.items() if key != "count" and isinstance(value, list)]
    if not lists:
        return []
    if len(lists) > 1 or not all(isinstance(item, dict) for item in lists[0]):
        raise CloudStackProtocolError(f"{command}: unexpected list shape {sorted(body)}")
    return lists[0]


def _unwrap(body: bytes) -> JsonObject | None:
    try:
        payload = json.loads(body)
    except ValueError:
        return None
    if not isinstance(payload, dict) or len(payload) != 1:
        return None
    ((key, inner),) = payload.items()
    if not key.endswith("response") or not isinstance(inner, dict):
        return None
    return inner


def _int(value: object, default: int | None) -> int | None:
    if isinstance(value, bool):
        return default
    if isinstance(value, int):
        return value
    if isinstance(value, str) and value.strip().isdigit():
        return int(value)
    return default


def _retry_after(value: str | None) -> float | None:
    if value is None:
        return None
    try:
        seconds = float(value)
    except ValueError:
        return None  # an HTTP date: ignored, the backoff applies
    return max(seconds, 0.0)


def _snippet(body: bytes, limit: int = 200) -> str:
    return " ".join(body.decode("utf-8", "replace").split())[:limit]
