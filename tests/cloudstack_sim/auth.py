"""Request verification as CloudStack's ApiServer.verifyRequest does it, written from the Java
code rather than shared with the client, so that a signing mistake cannot hide itself.

Anything wrong (unknown command, missing apikey or signature, a signatureversion 3 request
without a valid future `expires`, an unknown key, a wrong signature) gives the same answer:
401, "unable to verify user credentials and/or request signature".
"""

from __future__ import annotations

import base64
import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta

VERIFY_FAILED = "unable to verify user credentials and/or request signature"
# With enforce.post.requests.and.timestamps, `expires` may be at most this far ahead.
MAX_EXPIRES_AHEAD = timedelta(minutes=15)
_JAVA_SAFE = frozenset(b"abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-*_")


@dataclass(frozen=True)
class ApiUser:
    api_key: str
    secret_key: str
    account: str
    account_type: int = 1  # Account.Type ordinal: 0 user, 1 root admin, 2 domain admin
    username: str = "admin"


def java_url_encoder(value: str) -> str:
    """java.net.URLEncoder.encode(value, "UTF-8"): space becomes '+', uppercase hex."""
    out = []
    for byte in value.encode("utf-8"):
        if byte in _JAVA_SAFE:
            out.append(chr(byte))
        elif byte == 0x20:
            out.append("+")
        else:
            out.append(f"%{byte:02X}")
    return "".join(out)


def parse_tz_date(text: str) -> datetime | None:
    """DateUtil.parseTZDateString: ISO offset (+00:00 or Z) or yyyy-MM-dd'T'HH:mm:ssZ."""
    for pattern in ("%Y-%m-%dT%H:%M:%S%z", "%Y-%m-%dT%H:%M:%S.%f%z"):
        try:
            return datetime.strptime(text, pattern)
        except ValueError:
            continue
    return None


def verify(
    params: Mapping[str, list[str]],
    users: Mapping[str, ApiUser],
    *,
    now: datetime,
    known_commands: frozenset[str],
    enforce_timestamps: bool = False,
) -> ApiUser | None:
    """The caller when the request is signed right, else None."""
    command = params.get("command", [None])[0]
    if command is None or command not in known_commands:
        return None
    signature = api_key = version = expires = None
    pairs = []
    for name in sorted(params):  # Collections.sort: Java's String order
        value = params[name][0]
        lowered = name.lower()
        if lowered == "signature":
            signature = value
            continue
        if lowered == "apikey":
            api_key = value
        elif lowered == "signatureversion":
            version = value
        elif lowered == "expires":
            expires = value
        pairs.append(f"{name}={java_url_encoder(value).replace('+', '%20')}")
    if signature is None or api_key is None:
        return None
    if version == "3":
        if expires is None:
            return None
        expires_at = parse_tz_date(expires)
        if expires_at is None or expires_at < now:
            return None
        if enforce_timestamps and expires_at > now + MAX_EXPIRES_AHEAD:
            return None
    elif enforce_timestamps:
        return None
    user = users.get(api_key)
    if user is None:
        return None
    unsigned = "&".join(pairs).lower()
    computed = base64.b64encode(
        hmac.new(user.secret_key.encode(), unsigned.encode(), hashlib.sha1).digest()
    ).decode()
    return user if hmac.compare_digest(signature, computed) else None
