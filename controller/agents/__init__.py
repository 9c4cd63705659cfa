"""The controller's side of the agents' gRPC API: an async client per host over mutual TLS,
with gRPC failures as typed errors (transient or permanent) and agent jobs as plain data."""

from controller.agents.client import (
    QUIESCE,
    AgentBackup,
    AgentClient,
    AgentDiskSnapshots,
    AgentSnapshot,
    AgentVolume,
    HostInfo,
)
from controller.agents.credentials import TlsFiles
from controller.agents.errors import (
    AgentBusy,
    AgentError,
    AgentRefused,
    AgentUnavailable,
    from_rpc_error,
)
from controller.agents.group_freeze import AgentGroupFreeze
from controller.agents.jobs import AgentJob, AgentJobState, SnapshotDisk
from controller.agents.pool import AgentPool, endpoint_at_port

__all__ = [
    "QUIESCE",
    "AgentBackup",
    "AgentBusy",
    "AgentClient",
    "AgentDiskSnapshots",
    "AgentError",
    "AgentGroupFreeze",
    "AgentJob",
    "AgentJobState",
    "AgentPool",
    "AgentRefused",
    "AgentSnapshot",
    "AgentUnavailable",
    "AgentVolume",
    "HostInfo",
    "SnapshotDisk",
    "TlsFiles",
    "endpoint_at_port",
    "from_rpc_error",
]
