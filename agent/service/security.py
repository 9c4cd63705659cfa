"""Who is calling and what they may do: identity from the client certificate (or the
root-only unix socket), roles from the configuration, and the audit log of mutating calls."""

from __future__ import annotations

import enum
import json
import os
import threading
import time
from pathlib import Path

import grpc

LOCAL_IDENTITY = "local-root"
INSECURE_IDENTITY = "insecure-development"


class Role(enum.IntEnum):
    VIEWER = 1
    OPERATOR = 2
    ADMIN = 3


def certificate_names(context: grpc.aio.ServicerContext) -> list[str]:
    """The verified client certificate's names: its subject alternative names, or its CN
    when it has none (as TLS name checking does); empty without a verified certificate."""
    auth = context.auth_context()
    # A certificate without a CN has an empty one here: it names no one, not "".
    sans = [v.decode() for v in auth.get("x509_subject_alternative_name", []) if v]
    return sans or [v.decode() for v in auth.get("x509_common_name", []) if v]


def has_certificate(context: grpc.aio.ServicerContext) -> bool:
    """The caller presented a certificate that the TLS handshake verified."""
    return bool(context.auth_context().get("x509_pem_cert"))


class Authorizer:
    def __init__(self, roles: dict[str, str], insecure_tcp: bool) -> None:
        self._roles = {name: Role[role.upper()] for name, role in roles.items()}
        self._insecure_tcp = insecure_tcp

    def identify(self, context: grpc.aio.ServicerContext) -> tuple[str | None, Role | None]:
        """(identity, role); identity None means the caller is not authenticated.

        The listener decides what a caller is: on the root-only unix socket an admin; on TCP
        whatever its certificate's names are granted, the least of them when several are."""
        if context.peer().startswith("unix:"):
            return LOCAL_IDENTITY, Role.ADMIN
        names = certificate_names(context)
        if not names:
            if self._insecure_tcp:
                return INSECURE_IDENTITY, Role.ADMIN
            return None, None
        granted = [(self._roles[n], n) for n in names if n in self._roles]
        if not granted:
            return names[0], None
        role, name = min(granted)
        return name, role


class AuditLog:
    """JSON lines: time, identity, rpc, target, result. One line per mutating call."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

    def ensure_writable(self) -> None:
        """Fails (OSError) when a line could not be written: a mutating call is refused then."""
        os.close(os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600))

    def write(self, identity: str | None, rpc: str, target: str, result: str) -> None:
        line = json.dumps(
            {
                "time": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
                "identity": identity,
                "rpc": rpc,
                "target": target,
                "result": result,
            }
        )
        with self._lock:
            fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
