"""The controller's configuration: /etc/hostsnap/controller.toml.

Every key can be overridden from the environment as HOSTSNAP_CONTROLLER_<SECTION>_<KEY>,
e.g. HOSTSNAP_CONTROLLER_STORE_URL. Secrets may be given as files (`secret_key_file`).
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

from controller.store import LeaseConfig

DEFAULT_PATH = Path("/etc/hostsnap/controller.toml")


class ConfigError(ValueError):
    """The configuration cannot be used; the message says which key and why."""


@dataclass(frozen=True)
class CloudStackSettings:
    url: str = ""  # the API endpoint, e.g. https://mgmt.example:8443/client/api
    api_key: str = ""
    secret_key: str = ""
    secret_key_file: str = ""  # read when secret_key is empty
    zone_id: str = ""  # the zone this controller coordinates (empty: every zone)
    ca_file: str = ""
    timeout: float = 30.0


@dataclass(frozen=True)
class StoreSettings:
    url: str = "sqlite:////var/lib/hostsnap-controller/controller.db"


@dataclass(frozen=True)
class AgentSettings:
    port: int = 7443  # the agents' mutual-TLS port on each host's CloudStack address
    ca: str = "/etc/hostsnap/tls/ca.crt"
    cert: str = "/etc/hostsnap/tls/controller.crt"
    key: str = "/etc/hostsnap/tls/controller.key"
    server_name: str = ""  # when the agents' certificates do not name the hosts' addresses
    call_timeout: float = 30.0
    insecure: bool = False  # development only: plain TCP to the agents


@dataclass(frozen=True)
class LeaseSettings:
    duration: float = 15.0
    renew_interval: float = 5.0
    retry_interval: float = 2.0
    margin: float = 1.0


@dataclass(frozen=True)
class DispatchSettings:
    per_host: int = 1
    per_pool: int = 4
    total: int = 16
    poll_interval: float = 5.0


@dataclass(frozen=True)
class ScheduleSettings:
    inventory_interval: float = 60.0  # CloudStack's state is read this often at least
    policy_interval: float = 30.0  # due policies are looked for this often
    job_timeout: float = 3600.0  # a policy's snapshot job must end within this


@dataclass(frozen=True)
class ReconcileSettings:
    interval: float = 300.0  # seconds between reconcile passes (0: none)
    fix: bool = True  # fix what can be fixed (CloudStack's stale paths); else only report
    intents_after: float = 600.0  # an intent still open after this long is looked at
    transitional_after: float = 3600.0  # a snapshot in a transitional state longer is reported


@dataclass(frozen=True)
class GroupSettings:
    name: str
    vms: tuple[str, ...]  # CloudStack VM ids, names or instance names; always frozen together
    deadline: float = 30.0  # freeze all, snapshot all, thaw all within this
    # The longest freeze asked of an agent (at most its [agent] group_hold_max, or every
    # FreezeForGroup is refused).
    max_hold: float = 30.0


@dataclass(frozen=True)
class Settings:
    cloudstack: CloudStackSettings = field(default_factory=CloudStackSettings)
    store: StoreSettings = field(default_factory=StoreSettings)
    agents: AgentSettings = field(default_factory=AgentSettings)
    lease: LeaseSettings = field(default_factory=LeaseSettings)
    dispatch: DispatchSettings = field(default_factory=DispatchSettings)
    schedule: ScheduleSettings = field(default_factory=ScheduleSettings)
    reconcile: ReconcileSettings = field(default_factory=ReconcileSettings)
    groups: tuple[GroupSettings, ...] = ()

    def secret_key(self) -> str:
        if self.cloudstack.secret_key:
            return self.cloudstack.secret_key
        if not self.cloudstack.secret_key_file:
            raise ConfigError("[cloudstack] needs secret_key or secret_key_file")
        try:
            return Path(self.cloudstack.secret_key_file).read_text().strip()
        except OSError as e:
            raise ConfigError(f"[cloudstack] secret_key_file: {e}") from e

    def group(self, name: str) -> GroupSettings:
        for group in self.groups:
            if group.name == name:
                return group
        raise ConfigError(f"no consistency group {name!r} in the configuration")


_SECTIONS: dict[str, type[Any]] = {
    "cloudstack": CloudStackSettings,
    "store": StoreSettings,
    "agents": AgentSettings,
    "lease": LeaseSettings,
    "dispatch": DispatchSettings,
    "schedule": ScheduleSettings,
    "reconcile": ReconcileSettings,
}


def load(path: Path | None = None, env: Mapping[str, str] = os.environ) -> Settings:
    """The settings of `path` (which must exist), else of the default file if there is one,
    else the defaults; then the environment's overrides."""
    if path is not None and not path.exists():
        raise ConfigError(f"{path} does not exist")
    path = path or DEFAULT_PATH
    try:
        raw = tomllib.loads(path.read_text()) if path.exists() else {}
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise ConfigError(f"{path}: {e}") from e
    unknown = set(raw) - {*_SECTIONS, "groups"}
    if unknown:
        raise ConfigError(f"{path}: unknown sections: {', '.join(sorted(unknown))}")
    sections = {
        name: _section(cls, name, raw.get(name, {}), env) for name, cls in _SECTIONS.items()
    }
    settings = Settings(**sections, groups=_groups(raw.get("groups", [])))
    _check(settings)
    return settings


# Seconds that must be above zero (a zero interval would make a loop spin).
_POSITIVE = (
    ("cloudstack", "timeout"),
    ("agents", "call_timeout"),
    ("dispatch", "poll_interval"),
    ("schedule", "inventory_interval"),
    ("schedule", "policy_interval"),
    ("schedule", "job_timeout"),
)


def _check(settings: Settings) -> None:
    for section, key in _POSITIVE:
        if getattr(getattr(settings, section), key) <= 0:
            raise ConfigError(f"[{section}] {key} must be above 0")
    if not 1 <= settings.agents.port <= 65535:
        raise ConfigError(f"[agents] port {settings.agents.port} is not a TCP port")
    limits = settings.dispatch
    if min(limits.per_host, limits.per_pool, limits.total) < 1:
        raise ConfigError("[dispatch] per_host, per_pool and total must be at least 1")
    lease = settings.lease
    try:
        LeaseConfig(
            duration=lease.duration,
            renew_interval=lease.renew_interval,
            retry_interval=lease.retry_interval,
            margin=lease.margin,
        )
    except ValueError as e:
        raise ConfigError(f"[lease] {e}") from None


def _section(cls: type[Any], name: str, values: Any, env: Mapping[str, str]) -> Any:
    if not isinstance(values, dict):
        raise ConfigError(f"[{name}] must be a table")
    values = dict(values)
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = set(values) - set(fields)
    if unknown:
        raise ConfigError(f"[{name}] has unknown keys: {', '.join(sorted(unknown))}")
    for key in fields:
        override = env.get(f"HOSTSNAP_CONTROLLER_{name.upper()}_{key.upper()}")
        if override is not None:
            values[key] = override
    defaults = cls()
    return cls(
        **{k: _coerce(type(getattr(defaults, k)), v, f"[{name}] {k}") for k, v in values.items()}
    )


def _coerce(kind: type[Any], value: Any, where: str) -> Any:
    if kind is bool:
        if isinstance(value, bool):
            return value
        text = str(value).lower()
        if text in ("1", "true", "yes", "0", "false", "no"):
            return text in ("1", "true", "yes")
        raise ConfigError(f"{where}: expected true or false, got {value!r}")
    try:
        converted = kind(value)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}: expected {kind.__name__}, got {value!r}") from None
    if kind in (int, float) and not 0 <= converted < math.inf:
        raise ConfigError(f"{where}: must be a finite number, not negative")
    return converted


_GROUP_KEYS = ("name", "vms", "deadline", "max_hold")


def _groups(raw: Any) -> tuple[GroupSettings, ...]:
    if not isinstance(raw, list):
        raise ConfigError("[[groups]] must be an array of tables")
    groups = []
    for i, entry in enumerate(raw):
        where = f"[[groups]] #{i + 1}"
        if not isinstance(entry, dict) or set(entry) - set(_GROUP_KEYS):
            raise ConfigError(f"{where}: keys are {', '.join(_GROUP_KEYS)}")
        vms = entry.get("vms")
        if not entry.get("name") or not isinstance(vms, list) or len(vms) < 2:
            raise ConfigError(f"{where}: needs a name and at least two vms")
        where = f"[[groups]] {entry['name']}"
        if not all(isinstance(vm, str) and vm for vm in vms):
            raise ConfigError(f"{where}: vms must be VM ids, names or instance names")
        twice = sorted({vm for vm in vms if vms.count(vm) > 1})
        if twice:
            raise ConfigError(f"{where}: vms names {', '.join(twice)} twice")
        deadline = _seconds(entry.get("deadline", 30.0), f"{where} deadline")
        max_hold = _seconds(entry.get("max_hold", 30.0), f"{where} max_hold")
        groups.append(GroupSettings(str(entry["name"]), tuple(vms), deadline, max_hold))
    if len({g.name for g in groups}) != len(groups):
        raise ConfigError("[[groups]]: a name is given twice")
    return tuple(groups)


def _seconds(value: Any, where: str) -> float:
    """A duration in seconds: a finite number above 0."""
    if isinstance(value, bool):
        raise ConfigError(f"{where}: expected seconds, got {value!r}")
    seconds: float = _coerce(float, value, where)
    if not (math.isfinite(seconds) and seconds > 0):
        raise ConfigError(f"{where}: must be a finite number of seconds above 0, got {value!r}")
    return seconds
