"""Request signing exactly as CloudStack's ApiServer.verifyRequest checks it.

The server takes every parameter but `signature`, sorts the names (Java's case-sensitive
order), joins `name=value` with each value encoded by Java's URLEncoder (UTF-8; letters,
digits and `.-*_` kept, space as `+`) and `+` then written `%20`, joins the pairs with `&`,
lower-cases the whole string, and compares Base64(HMAC-SHA1(secret, string)) with
`signature`. With `signatureversion=3` an `expires` time is required and the request is
refused once it has passed.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from urllib.parse import quote

# `yyyy-MM-dd'T'HH:mm:ssZ` (e.g. 2024-05-01T12:00:00+0000): the format every CloudStack
# release parses (DateUtil.ZONED_DATETIME_FORMAT); newer ones also take ISO offsets.
EXPIRES_FORMAT = "%Y-%m-%dT%H:%M:%S%z"


def java_url_encode(value: str) -> str:
    """Java's URLEncoder.encode(value, UTF-8) with `+` written `%20`.

    Python's quote() also keeps `~`, which Java encodes; `*` is kept by Java only.
    """
    return quote(value, safe="*").replace("~", "%7E")


def string_to_sign(params: Mapping[str, str]) -> str:
    pairs = (
        f"{name}={java_url_encode(params[name])}"
        for name in sorted(params)
        if name.lower() != "signature"
    )
    return "&".join(pairs).lower()


def signature(params: Mapping[str, str], secret_key: str) -> str:
    digest = hmac.new(secret_key.encode(), string_to_sign(params).encode(), hashlib.sha1).digest()
    return base64.b64encode(digest).decode("ascii")


def format_expires(when: datetime) -> str:
    return when.astimezone(UTC).strftime(EXPIRES_FORMAT)


def signed_params(
    params: Mapping[str, str],
    *,
    api_key: str,
    secret_key: str,
    now: datetime,
    expires_in: timedelta,
) -> dict[str, str]:
    """`params` with `apikey`, `signatureversion=3`, `expires` and `signature` added."""
    signed = dict(params)
    signed["apikey"] = api_key
    signed["signatureversion"] = "3"
    signed["expires"] = format_expires(now + expires_in)
    signed["signature"] = signature(signed, secret_key)
    return signed
