"""What a response shows of a record, by the caller's role and the `details` asked for.

A root admin's call runs the command's *ByAdmin class (ResponseView.Full), anyone else's the
user class (ResponseView.Restricted): ApiServer.getCmdClass in
server/src/main/java/com/cloud/api/ApiServer.java. The fields only the Full view carries:

- volumes: server/src/main/java/com/cloud/api/query/dao/VolumeJoinDaoImpl.java (path,
  storage pool id and name, hypervisor, storage type, pod and cluster);
- VMs: server/src/main/java/com/cloud/api/query/dao/UserVmJoinDaoImpl.java (instance name,
  host id and name).

`details` of listVirtualMachines (api/.../command/user/vm/ListVMsCmd.java) and listHosts
(api/.../command/admin/host/ListHostsCmd.java) must name values of VMDetails / HostDetails,
else 431; `min` leaves out what only the other details add (UserVmJoinDaoImpl,
HostJoinDaoImpl.newHostResponse).
"""

from __future__ import annotations

from typing import Any

from .checks import CS_INVALID_PARAMETER, PARAM_ERROR, Params
from .jobs import ApiError

Record = dict[str, Any]

VOLUME_FULL_ONLY = frozenset(
    {"path", "storageid", "storage", "hypervisor", "storagetype", "clusterid", "clustername",
     "podid", "podname"}
)  # fmt: skip
VM_FULL_ONLY = frozenset({"instancename", "hostid", "hostname"})

VM_DETAILS = ("all", "group", "nics", "stats", "secgrp", "tmpl", "servoff", "diskoff",
              "backoff", "iso", "volume", "min", "affgrp")  # fmt: skip
HOST_DETAILS = ("all", "capacity", "events", "stats", "min")
# What `details=min` leaves out of the simulator's records.
VM_NOT_MIN = frozenset(
    {"templateid", "templatename", "templatedisplaytext", "serviceofferingid",
     "serviceofferingname", "nic", "securitygroup", "affinitygroup", "cpuused"}
)  # fmt: skip
HOST_NOT_MIN = frozenset({"zonename", "podname", "clustername", "hypervisorversion", "events"})


def restricted(record: Record, full_only: frozenset[str]) -> Record:
    return {k: v for k, v in record.items() if k not in full_only}


def details(params: Params, allowed: tuple[str, ...]) -> frozenset[str]:
    """The `details` asked for; `all` when none."""
    asked = [d for d in params.get("details", "").split(",") if d]
    for detail in asked:
        if detail not in allowed:
            raise ApiError(
                PARAM_ERROR,
                "The details parameter contains a non permitted value. "
                f"The allowed values are [{', '.join(allowed)}]",
                CS_INVALID_PARAMETER,
            )
    return frozenset(asked or ["all"])


def shown(record: Record, asked: frozenset[str], not_min: frozenset[str]) -> Record:
    if asked == {"min"}:
        return restricted(record, not_min)
    return record
