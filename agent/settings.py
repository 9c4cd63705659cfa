"""The agent's configuration file (/etc/hostsnap/agent.toml) with environment overrides.

Every key can be overridden as HOSTSNAP_<SECTION>_<KEY>, e.g. HOSTSNAP_AGENT_STATE_DIR or
HOSTSNAP_LISTEN_TCP. `hostsnap-agent --check-config` loads and validates it.
"""

from __future__ import annotations

import dataclasses
import math
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.admission import AdmissionConfig
from agent.config import AgentConfig

DEFAULT_PATH = Path("/etc/hostsnap/agent.toml")
ROLES = ("viewer", "operator", "admin")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class ListenSettings:
    # Root-only unix socket for the local `hostsnap` CLI (empty: none).
    unix_socket: str = "/run/hostsnap/agent.sock"
    # host:port for the mutual-TLS listener (empty: none).
    tcp: str = ""
    # Development only: listen on TCP without TLS; every caller is then an admin.
    insecure_tcp: bool = False
    # host:port of the Prometheus text endpoint (empty: none), e.g. "127.0.0.1:9464".
    metrics: str = ""


@dataclass(frozen=True)
class TlsSettings:
    cert: str = ""
    key: str = ""
    # The CA that signs the certificates of allowed clients.
    client_ca: str = ""


@dataclass(frozen=True)
class Limits:
    max_message_bytes: int = 4 * 1024 * 1024
    # Queries that take longer are cancelled with DEADLINE_EXCEEDED.
    query_timeout: float = 60.0
    # Jobs run in this many worker threads at most.
    job_workers: int = 4
    # On SIGTERM, running jobs get this long to reach their end.
    shutdown_grace: float = 60.0
    # Before an upgrade restarts the agent (hostsnap-agent --drain), running jobs get this
    # long to end while no new one starts.
    drain_timeout: float = 1800.0


@dataclass(frozen=True)
class Settings:
    agent: AgentConfig = field(default_factory=AgentConfig)
    listen: ListenSettings = field(default_factory=ListenSettings)
    tls: TlsSettings = field(default_factory=TlsSettings)
    limits: Limits = field(default_factory=Limits)
    # Client certificate identity (CN or SAN) -> viewer, operator or admin.
    roles: dict[str, str] = field(default_factory=dict)
    audit_log: str = "/var/log/hostsnap/audit.log"
    admission: AdmissionConfig = field(default_factory=AdmissionConfig)


def load(path: Path | None = None, env: Mapping[str, str] = os.environ) -> Settings:
    """The settings of `path`; without one, of the default file if there is one, else the
    defaults. A file named explicitly must exist."""
    if path is not None and not path.exists():
        raise ConfigError(f"{path} does not exist")
    path = path or DEFAULT_PATH
    try:
        raw = tomllib.loads(path.read_text()) if path.exists() else {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
    unknown = set(raw) - {"agent", "listen", "tls", "limits", "roles", "audit", "admission"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections: {', '.join(sorted(unknown))}")
    settings = Settings(
        agent=_section(AgentConfig, "agent", raw, env),
        listen=_section(ListenSettings, "listen", raw, env),
        tls=_section(TlsSettings, "tls", raw, env),
        limits=_section(Limits, "limits", raw, env),
        roles=dict(raw.get("roles", {})),
        admission=_section(AdmissionConfig, "admission", raw, env),
        audit_log=str(
            env.get("HOSTSNAP_AUDIT_LOG", raw.get("audit", {}).get("log", Settings.audit_log))
        ),
    )
    validate(settings)
    return settings


def _section(cls: type[Any], name: str, raw: dict[str, Any], env: Mapping[str, str]) -> Any:
    values = dict(raw.get(name, {}))
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"[{name}] has unknown keys: {', '.join(sorted(unknown))}")
    for key in fields:
        override = env.get(f"HOSTSNAP_{name.upper()}_{key.upper()}")
        if override is not None:
            values[key] = override
    kinds = {f.name: type(getattr(cls(), f.name)) for f in dataclasses.fields(cls)}
    try:
        return cls(**{k: _coerce(kinds[k], v, f"[{name}] {k}") for k, v in values.items()})
    except TypeError as e:
        raise ConfigError(f"[{name}]: {e}") from e


def _coerce(kind: type[Any], value: Any, where: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        if str(value).lower() in ("1", "true", "yes"):
            return True
        if str(value).lower() in ("0", "false", "no", ""):
            return False
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    if issubclass(kind, Path):
        return Path(value)
    if kind is dict:
        if isinstance(value, str):  # from the environment: "pool=n,pool2=m"
            pairs = [item.rpartition("=") for item in value.split(",") if item.strip()]
            value = {k.strip(): v for k, _, v in pairs}
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: expected a table")
        return {
            os.path.normpath(str(k)) if str(k).startswith("/") else str(k): _coerce(
                float, v, f"{where}.{k}"
            )
            for k, v in value.items()
        }
    if kind is int and isinstance(value, float) and not value.is_integer():
        raise ConfigError(f"{where}: expected a whole number, got {value!r}")
    try:
        return kind(value)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from e


def validate(settings: Settings) -> None:
    listen, tls = settings.listen, settings.tls
    if not listen.unix_socket and not listen.tcp:
        raise ConfigError("[listen] needs unix_socket or tcp: the agent would not be reachable")
    if listen.tcp and not listen.insecure_tcp and not (tls.cert and tls.key and tls.client_ca):
        raise ConfigError(
            "[listen] tcp needs [tls] cert, key and client_ca (mutual TLS); the agent refuses "
            "to listen on TCP without them unless insecure_tcp = true (development only)"
        )
    for label, file in (("cert", tls.cert), ("key", tls.key), ("client_ca", tls.client_ca)):
        if listen.tcp and not listen.insecure_tcp and not Path(file).is_file():
            raise ConfigError(f"[tls] {label}: {file} is not a readable file")
    for identity, role in settings.roles.items():
        if role not in ROLES:
            raise ConfigError(
                f"[roles] {identity!r} = {role!r}: a role is one of {', '.join(ROLES)}"
            )
    if not 0 < settings.agent.freeze_deadline <= 60:
        raise ConfigError("[agent] freeze_deadline must be between 0 and 60 seconds")
    if not 0 < settings.agent.group_hold_max <= 300:
        raise ConfigError("[agent] group_hold_max must be between 0 and 300 seconds")
    if listen.insecure_tcp and listen.tcp.rsplit(":", 1)[0] not in (
        "127.0.0.1",
        "localhost",
        "[::1]",
    ):
        raise ConfigError("[listen] insecure_tcp is for development on a loopback address only")
    for name, value in dataclasses.asdict(settings.limits).items():
        if value <= 0:
            raise ConfigError(f"[limits] {name} must be greater than 0")
    if not math.isfinite(settings.limits.drain_timeout):
        raise ConfigError("[limits] drain_timeout must be a finite number of seconds")
    a = settings.admission
    positive = [a.max_jobs, a.max_jobs_per_pool, a.wait_timeout, a.poll_interval]
    positive += list(a.iops_capacity.values())
    if not all(math.isfinite(v) and v > 0 for v in positive):
        raise ConfigError(
            "[admission] max_jobs, max_jobs_per_pool, wait_timeout, poll_interval and every "
            "iops_capacity must be finite and greater than 0"
        )
    if not (math.isfinite(a.temperature_ceiling) and a.temperature_ceiling >= 0):
        raise ConfigError("[admission] temperature_ceiling must be 0 (none) or a temperature")
    if not (0 < a.throttle_at <= 1 and a.throttled_bandwidth_mib > 0):
        raise ConfigError(
            "[admission] throttle_at must be in (0, 1] and throttled_bandwidth_mib above 0"
        )
