"""The API commands the controller uses, answering in CloudStack's JSON shapes.

Lists follow BaseListCmd and ApiResponseSerializer: at most `default_page_size` records per
answer whatever the total; `page` and `pagesize` go together; `count` is the total and, like
the list key, is left out when nothing matched (`{}`). An id parameter naming nothing is a
431 from the UUID translation, as in CloudStack. Without `listall=true` the caller sees only
its own account's VMs, volumes, snapshots and tags.

Error texts are CloudStack's where its source gives them; the texts for an unknown tag
resource type, a missing tag resource and a duplicate tag key are this simulator's.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .auth import ApiUser
from .jobs import ApiError, JobQueue
from .seed import ACCOUNT_IDS
from .world import VOLUME_STATES, Tag, World

PARAM_ERROR, INTERNAL_ERROR = 431, 530
CS_SERVER_API_EXCEPTION, CS_INVALID_PARAMETER = 9999, 4350
TAGGABLE = frozenset({"Volume", "UserVm", "Snapshot"})
_TAG_PARAM = re.compile(r"^tags\[(\d+)\]\.(key|value)$")

Params = dict[str, str]
Record = dict[str, Any]


def response_name(command: str) -> str:
    return f"{command.lower()}response"


class Api:
    def __init__(self, world: World, jobs: JobQueue) -> None:
        self.world = world
        self.jobs = jobs
        self.default_page_size = 500  # default.page.size
        self._handlers: dict[str, Callable[[Params, ApiUser], Record]] = {
            "listZones": self._list_zones,
            "listHosts": self._list_hosts,
            "listStoragePools": self._list_pools,
            "listVirtualMachines": self._list_vms,
            "listVolumes": self._list_volumes,
            "listSnapshots": self._list_snapshots,
            "listSnapshotPolicies": self._list_policies,
            "listTags": self._list_tags,
            "listConfigurations": self._list_configurations,
            "queryAsyncJobResult": self._query_job,
            "updateVolume": self._update_volume,
            "createTags": self._create_tags,
            "deleteTags": self._delete_tags,
        }
        self.commands = frozenset(self._handlers)

    def handle(self, command: str, params: Params, user: ApiUser) -> Record:
        with self.world.lock:
            return self._handlers[command](params, user)

    # -- helpers -----------------------------------------------------------------------

    def _ref(self, command: str, params: Params, name: str, table: dict[str, Any]) -> Any:
        value = params.get(name)
        if value is None:
            return None
        if value not in table:
            raise _no_such_entity(command, name, value)
        return table[value]

    def _page(
        self, command: str, params: Params, object_name: str, records: list[Record]
    ) -> Record:
        page, size = _int(command, params, "page"), _int(command, params, "pagesize")
        if size is not None and page is None and size != -1:
            raise ApiError(
                PARAM_ERROR,
                '"page" parameter is required when "pagesize" is specified',
                CS_SERVER_API_EXCEPTION,
            )
        if page is not None and size is None:
            raise ApiError(
                PARAM_ERROR,
                '"pagesize" parameter is required when "page" is specified',
                CS_SERVER_API_EXCEPTION,
            )
        if size is not None and size > self.default_page_size:
            raise ApiError(
                PARAM_ERROR,
                f"Page size can't exceed max allowed page size value: {self.default_page_size}",
                CS_INVALID_PARAMETER,
            )
        if size == -1 and page is not None:
            raise ApiError(
                PARAM_ERROR,
                "Can't specify page parameter when pagesize is -1 (Unlimited)",
                CS_INVALID_PARAMETER,
            )
        if size == -1:
            shown = records
        else:
            size = size or self.default_page_size
            start = size * (page - 1) if page and page > 0 else 0
            shown = records[start : start + size]
        body: Record = {}
        if records:
            body["count"] = len(records)
            if shown:
                body[object_name] = shown
        return body

    @staticmethod
    def _visible(params: Params, user: ApiUser, account: str) -> bool:
        return params.get("listall", "").lower() == "true" or account == user.account

    # -- lists -------------------------------------------------------------------------

    def _list_zones(self, params: Params, user: ApiUser) -> Record:
        zone = self._ref("listZones", params, "id", self.world.zones)
        zones = [z for z in self.world.zones.values() if zone in (None, z)]
        zones = [z for z in zones if params.get("name") in (None, z.name)]
        return self._page("listZones", params, "zone", [z.to_api() for z in zones])

    def _list_hosts(self, params: Params, user: ApiUser) -> Record:
        host = self._ref("listHosts", params, "id", self.world.hosts)
        zone = self._ref("listHosts", params, "zoneid", self.world.zones)
        hosts = [
            h
            for h in self.world.hosts.values()
            if host in (None, h)
            and zone in (None, h.zone)
            and params.get("type") in (None, h.type)
            and params.get("name") in (None, h.name)
        ]
        return self._page("listHosts", params, "host", [h.to_api() for h in hosts])

    def _list_pools(self, params: Params, user: ApiUser) -> Record:
        pool = self._ref("listStoragePools", params, "id", self.world.pools)
        zone = self._ref("listStoragePools", params, "zoneid", self.world.zones)
        pools = [
            p
            for p in self.world.pools.values()
            if pool in (None, p) and zone in (None, p.zone) and params.get("name") in (None, p.name)
        ]
        return self._page("listStoragePools", params, "storagepool", [p.to_api() for p in pools])

    def _list_vms(self, params: Params, user: ApiUser) -> Record:
        cmd = "listVirtualMachines"
        vm = self._ref(cmd, params, "id", self.world.vms)
        zone = self._ref(cmd, params, "zoneid", self.world.zones)
        host = self._ref(cmd, params, "hostid", self.world.hosts)
        vms = [
            v
            for v in self.world.vms.values()
            if vm in (None, v)
            and zone in (None, v.zone)
            and (host is None or v.host is host)
            and params.get("state") in (None, v.state)
            and params.get("name") in (None, v.name)
            and self._visible(params, user, v.account)
        ]
        return self._page(cmd, params, "virtualmachine", [v.to_api() for v in vms])

    def _list_volumes(self, params: Params, user: ApiUser) -> Record:
        cmd = "listVolumes"
        volume = self._ref(cmd, params, "id", self.world.volumes)
        zone = self._ref(cmd, params, "zoneid", self.world.zones)
        vm = self._ref(cmd, params, "virtualmachineid", self.world.vms)
        pool = self._ref(cmd, params, "storageid", self.world.pools)
        volumes = [
            v
            for v in self.world.volumes.values()
            if volume in (None, v)
            and zone in (None, v.zone)
            and (vm is None or v.vm is vm)
            and (pool is None or v.pool is pool)
            and params.get("type") in (None, v.type)
            and params.get("state") in (None, v.state)
            and self._visible(params, user, v.account)
        ]
        return self._page(cmd, params, "volume", [v.to_api() for v in volumes])

    def _list_snapshots(self, params: Params, user: ApiUser) -> Record:
        cmd = "listSnapshots"
        snapshot = self._ref(cmd, params, "id", self.world.snapshots)
        volume = self._ref(cmd, params, "volumeid", self.world.volumes)
        snapshots = [
            s
            for s in self.world.snapshots.values()
            if snapshot in (None, s)
            and (volume is None or s.volume is volume)
            and self._visible(params, user, s.volume.account)
        ]
        return self._page(cmd, params, "snapshot", [s.to_api() for s in snapshots])

    def _list_policies(self, params: Params, user: ApiUser) -> Record:
        cmd = "listSnapshotPolicies"
        policy = self._ref(cmd, params, "id", self.world.policies)
        volume = self._ref(cmd, params, "volumeid", self.world.volumes)
        policies = [
            p
            for p in self.world.policies.values()
            if policy in (None, p) and (volume is None or p.volume is volume)
        ]
        return self._page(cmd, params, "snapshotpolicy", [p.to_api() for p in policies])

    def _list_configurations(self, params: Params, user: ApiUser) -> Record:
        # CloudStack matches `name` as a substring (LIKE %name%).
        wanted = params.get("name", "")
        found = [
            {"name": name, "value": value, "category": "Snapshots", "scope": "global"}
            for name, value in sorted(self.world.configurations.items())
            if wanted in name
        ]
        return self._page("listConfigurations", params, "configuration", found)

    def _list_tags(self, params: Params, user: ApiUser) -> Record:
        tags = [
            t
            for t in self.world.tags
            if params.get("resourcetype") in (None, t.resource_type)
            and params.get("resourceid") in (None, t.resource_id)
            and params.get("key") in (None, t.key)
            and params.get("value") in (None, t.value)
            and self._visible(params, user, t.account)
        ]
        return self._page("listTags", params, "tag", [t.to_api() for t in tags])

    # -- async jobs ----------------------------------------------------------------------

    def _query_job(self, params: Params, user: ApiUser) -> Record:
        jobid = _required("queryAsyncJobResult", params, "jobid")
        job = self.jobs.query(jobid)
        if job is None:
            raise _no_such_entity("queryAsyncJobResult", "jobid", jobid)
        return job.to_api()

    def _submit(
        self, user: ApiUser, cmd_class: str, kind: str, instance: str, effect: Callable[[], Record]
    ) -> Record:
        account_id = str(ACCOUNT_IDS.get(user.account, 4))
        jobid = self.jobs.submit(
            cmd_class=cmd_class,
            instance_type=kind,
            instance_id=instance,
            account_id=account_id,
            effect=lambda: self._locked(effect),
        )
        return {"jobid": jobid}

    def _locked(self, effect: Callable[[], Record]) -> Record:
        with self.world.lock:
            return effect()

    def _update_volume(self, params: Params, user: ApiUser) -> Record:
        cmd = "updateVolume"
        volume = self._ref(cmd, params, "id", self.world.volumes)
        if volume is None:
            raise ApiError(PARAM_ERROR, "Invalid volume id was provided", CS_INVALID_PARAMETER)
        pool = self._ref(cmd, params, "storageid", self.world.pools)

        def effect() -> Record:
            if "state" in params and params["state"] not in VOLUME_STATES:
                raise ApiError(PARAM_ERROR, "Invalid volume state specified")
            if pool is not None and pool.zone is not volume.zone:
                raise ApiError(
                    PARAM_ERROR,
                    "Invalid storageId specified; refers to the pool outside of the volume's zone",
                )
            volume.path = params.get("path", volume.path)
            volume.chain_info = params.get("chaininfo", volume.chain_info)
            volume.state = params.get("state", volume.state)
            volume.name = params.get("name", volume.name)
            volume.pool = pool or volume.pool
            return {"volume": volume.to_api()}

        return self._submit(
            user,
            "org.apache.cloudstack.api.command.admin.volume.UpdateVolumeCmdByAdmin",
            "Volume",
            volume.id,
            effect,
        )

    def _create_tags(self, params: Params, user: ApiUser) -> Record:
        tags = _tag_map("createTags", params, required=True)
        kind, ids = _tag_target("createTags", params)

        def effect() -> Record:
            for resource_id in ids:
                if not self.world.resource_exists(kind, resource_id):
                    raise ApiError(
                        PARAM_ERROR, f"Unable to find resource by id {resource_id} and type {kind}"
                    )
                for key in tags:
                    if any(
                        t.resource_id == resource_id and t.resource_type == kind and t.key == key
                        for t in self.world.tags
                    ):
                        raise ApiError(
                            INTERNAL_ERROR, f"tag {key} already exists on {kind} {resource_id}"
                        )
            for resource_id in ids:
                self.world.tags.extend(
                    Tag(k, v, kind, resource_id, user.account) for k, v in tags.items()
                )
            return {"success": True}

        return self._submit(
            user, "org.apache.cloudstack.api.command.user.tag.CreateTagsCmd", "None", "", effect
        )

    def _delete_tags(self, params: Params, user: ApiUser) -> Record:
        tags = _tag_map("deleteTags", params, required=False)
        kind, ids = _tag_target("deleteTags", params)

        def effect() -> Record:
            doomed = [
                t
                for t in self.world.tags
                if t.resource_type == kind
                and t.resource_id in ids
                and (not tags or (t.key in tags and tags[t.key] in ("", t.value)))
            ]
            if not doomed:
                raise ApiError(
                    PARAM_ERROR,
                    "Unable to find any tags which conform to specified delete parameters",
                )
            self.world.tags[:] = [t for t in self.world.tags if t not in doomed]
            return {"success": True}

        return self._submit(
            user, "org.apache.cloudstack.api.command.user.tag.DeleteTagsCmd", "None", "", effect
        )


def _no_such_entity(command: str, name: str, value: str) -> ApiError:
    """What the UUID translation of an id parameter says when the id names nothing."""
    return ApiError(
        PARAM_ERROR,
        f"Unable to execute API command {command.lower()} due to invalid value. "
        f"Invalid parameter {name} value={value} due to incorrect long value format, "
        "or entity does not exist or due to incorrect parameter annotation for the "
        "field in api cmd class.",
        CS_SERVER_API_EXCEPTION,
    )


def _required(command: str, params: Params, name: str) -> str:
    if name not in params:
        raise ApiError(
            PARAM_ERROR,
            f"Unable to execute API command {command.lower()} due to missing parameter {name}",
            CS_SERVER_API_EXCEPTION,
        )
    return params[name]


def _int(command: str, params: Params, name: str) -> int | None:
    if name not in params:
        return None
    try:
        return int(params[name])
    except ValueError:
        raise ApiError(
            PARAM_ERROR,
            f"Unable to execute API command {command.lower()} due to invalid value. "
            f"Invalid parameter {name} value={params[name]} due to incorrect integer value format",
            CS_SERVER_API_EXCEPTION,
        ) from None


def _tag_map(command: str, params: Params, *, required: bool) -> dict[str, str]:
    entries: dict[int, dict[str, str]] = {}
    for name, value in params.items():
        match = _TAG_PARAM.match(name)
        if match:
            entries.setdefault(int(match[1]), {})[match[2]] = value
    if required and not entries:
        _required(command, params, "tags")
    return {e["key"]: e.get("value", "") for _, e in sorted(entries.items()) if "key" in e}


def _tag_target(command: str, params: Params) -> tuple[str, list[str]]:
    kind = _required(command, params, "resourcetype")
    ids = [i for i in _required(command, params, "resourceids").split(",") if i]
    if kind not in TAGGABLE:
        raise ApiError(PARAM_ERROR, f"Invalid resource type: {kind}", CS_INVALID_PARAMETER)
    return kind, ids
