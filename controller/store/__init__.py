"""The controller's state: policies, runs, jobs, intents and the leader lease, in SQLite (one
controller) or MariaDB/MySQL (several, one leading), through SQLAlchemy Core.

Records come out as frozen dataclasses (`records`; a policy as its rows with the
controller.policies.Policy they make, `policies.StoredPolicy`); no SQLAlchemy object leaves
the package. Times are the database's (`clock`). Writes a leader makes present its `Lease`
and are refused with LeaseLost once another epoch leads (`tx.fenced`, `jobs` for dispatch).
"""

from controller.store.election import LeaderElection, LeaseConfig, default_holder
from controller.store.engine import DEFAULT_URL, make_engine
from controller.store.errors import (
    Conflict,
    LeaseLost,
    NotFound,
    SchemaMismatch,
    StaleClaim,
    StoreError,
    StoreUnavailable,
)
from controller.store.policies import SelectorRow, StoredPolicy
from controller.store.records import (
    Intent,
    IntentSpec,
    IntentState,
    Job,
    JobKind,
    JobSpec,
    JobState,
    Lease,
    LeaseInfo,
    Run,
    RunState,
)
from controller.store.store import Store

__all__ = [
    "DEFAULT_URL",
    "Conflict",
    "Intent",
    "IntentSpec",
    "IntentState",
    "Job",
    "JobKind",
    "JobSpec",
    "JobState",
    "LeaderElection",
    "Lease",
    "LeaseConfig",
    "LeaseInfo",
    "LeaseLost",
    "NotFound",
    "Run",
    "RunState",
    "SchemaMismatch",
    "SelectorRow",
    "StaleClaim",
    "Store",
    "StoreError",
    "StoreUnavailable",
    "StoredPolicy",
    "default_holder",
    "make_engine",
]
