"""One HTTP exchange with the management server, blocking; the client runs it in a thread.

The standard library's http.client does the HTTP (chunked bodies, TLS with the system's or a
given CA bundle), so the controller needs no HTTP package beyond Python itself. Each exchange
opens its own connection: the controller makes a few requests a second at most, and a
connection that is never reused can never be a stale one.
"""

from __future__ import annotations

import http.client
import socket
import ssl
from dataclasses import dataclass
from typing import Protocol
from urllib.parse import urlsplit


@dataclass(frozen=True)
class HttpResponse:
    status: int
    headers: dict[str, str]  # names lower-cased
    body: bytes


class TransportFailure(Exception):
    """No HTTP answer. `sent` is False when the request never left this host."""

    def __init__(self, message: str, *, sent: bool) -> None:
        super().__init__(message)
        self.sent = sent


class Transport(Protocol):
    def exchange(
        self, method: str, query: str, timeout: float
    ) -> HttpResponse:  # pragma: no cover - protocol
        """GET with `query` in the URL, or POST with it as a form body."""
        ...


class HttpTransport:
    def __init__(self, endpoint: str, *, ssl_context: ssl.SSLContext | None = None) -> None:
        parts = urlsplit(endpoint)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError(f"CloudStack endpoint must be an http(s) URL, not {endpoint!r}")
        self._https = parts.scheme == "https"
        self._host = parts.hostname
        self._port = parts.port
        self._path = parts.path or "/client/api"
        self._ssl_context = ssl_context if ssl_context is not None else ssl.create_default_context()

    def _connection(self, timeout: float) -> http.client.HTTPConnection:
        if self._https:
            return http.client.HTTPSConnection(
                self._host, self._port, timeout=timeout, context=self._ssl_context
            )
        return http.client.HTTPConnection(self._host, self._port, timeout=timeout)

    def exchange(self, method: str, query: str, timeout: float) -> HttpResponse:
        conn = self._connection(timeout)
        try:
            try:
                conn.connect()
            except (OSError, http.client.HTTPException) as exc:
                raise TransportFailure(f"cannot connect: {_describe(exc)}", sent=False) from exc
            headers = {"Accept": "application/json", "Connection": "close"}
            try:
                if method == "GET":
                    conn.request("GET", f"{self._path}?{query}", headers=headers)
                else:
                    headers["Content-Type"] = "application/x-www-form-urlencoded"
                    conn.request("POST", self._path, body=query.encode("ascii"), headers=headers)
                response = conn.getresponse()
                body = response.read()
            except (OSError, http.client.HTTPException) as exc:
                raise TransportFailure(_describe(exc), sent=True) from exc
            return HttpResponse(
                status=response.status,
                headers={name.lower(): value for name, value in response.getheaders()},
                body=body,
            )
        finally:
            conn.close()


def _describe(exc: BaseException) -> str:
    if isinstance(exc, socket.timeout | TimeoutError):
        return "timed out"
    if isinstance(exc, http.client.RemoteDisconnected):
        return "the server closed the connection without answering"
    return f"{type(exc).__name__}: {exc}" if str(exc) else type(exc).__name__
