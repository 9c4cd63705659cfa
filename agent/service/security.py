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


def identities(context: grpc.aio.ServicerContext) -> list[str]:
    """The caller's names: the unix-socket caller (root, by the socket's mode), or the
    verified client certificate's CN and SANs; empty when there is no verified certificate."""
    if context.peer().startswith("unix:"):
        return [LOCAL_IDENTITY]
    auth = context.auth_context()
    names = [
        value.decode()
        for key in ("x509_common_name", "x509_subject_alternative_name")
        for value in auth.get(key, [])
    ]
    return names


class Authorizer:
    def __init__(self, roles: dict[str, str], insecure_tcp: bool) -> None:
        self._roles = {name: Role[role.upper()] for name, role in roles.items()}
        self._insecure_tcp = insecure_tcp

    def identify(self, context: grpc.aio.ServicerContext) -> tuple[str | None, Role | None]:
        """(identity, role); identity None means the caller is not authenticated."""
        names = identities(context)
        if names == [LOCAL_IDENTITY]:
            return LOCAL_IDENTITY, Role.ADMIN
        if not names:
            if self._insecure_tcp:
                return INSECURE_IDENTITY, Role.ADMIN
            return None, None
        for name in names:
            if name in self._roles:
                return name, self._roles[name]
        return names[0], None


class AuditLog:
    """JSON lines: time, identity, rpc, target, result. One line per mutating call."""

    def __init__(self, path: Path) -> None:
        self._path = path
        self._lock = threading.Lock()
        path.parent.mkdir(parents=True, exist_ok=True)

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
            fd = os.open(self._path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o600)
            try:
                os.write(fd, (line + "\n").encode())
            finally:
                os.close(fd)
