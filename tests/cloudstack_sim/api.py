"""The API commands the controller uses, answering in CloudStack's JSON shapes.

Lists follow api/src/main/java/org/apache/cloudstack/api/BaseListCmd.java and
ApiResponseSerializer: at most `default_page_size` records per answer whatever the total;
`page` and `pagesize` go together; a `pagesize` above default.page.size is a 431; `count` is
the total and, like the list key, is left out when nothing matched (`{}`). An id parameter
naming nothing is a 431 from the UUID translation. Who sees which records is `access.acl`,
which fields `views`; tags are `tag_api`.

Error texts are CloudStack's where its source gives them.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from .access import ROLE_TYPES, Behaviour, acl, is_root_admin, require_available
from .auth import ApiUser
from .checks import (
    CS_INVALID_PARAMETER,
    CS_SERVER_API_EXCEPTION,
    PARAM_ERROR,
    Params,
    integer,
    no_such_entity,
    required,
)
from .jobs import ApiError, JobQueue
from .seed import ACCOUNT_IDS
from .tag_api import TagCommands
from .views import (
    HOST_DETAILS,
    HOST_NOT_MIN,
    VM_DETAILS,
    VM_FULL_ONLY,
    VM_NOT_MIN,
    VOLUME_FULL_ONLY,
    details,
    restricted,
    shown,
)
from .world import DOMAIN_ID, VOLUME_STATES, Owner, Tag, Volume, World, make_id

Record = dict[str, Any]
# updateVolume's parameters marked authorized = {RoleType.Admin}: BaseCmd ignores them when
# anyone else sends them (api/.../command/user/volume/UpdateVolumeCmd.java).
UPDATE_VOLUME_ADMIN_ONLY = ("path", "state", "storageid", "chaininfo")


def response_name(command: str) -> str:
    return f"{command.lower()}response"


class Api:
    def __init__(self, world: World, jobs: JobQueue, users: Mapping[str, ApiUser]) -> None:
        self.world = world
        self.jobs = jobs
        self.users = users
        self.default_page_size = 500  # default.page.size
        self.behaviour = Behaviour()
        self.tag_commands = TagCommands(world, self._submit_tags, self._tag_visible, self.behaviour)
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
            "getUser": self._get_user,
            "queryAsyncJobResult": self._query_job,
            "updateVolume": self._update_volume,
            "createTags": self.tag_commands.create,
            "deleteTags": self.tag_commands.delete,
        }
        self.commands = frozenset(self._handlers)

    def handle(self, command: str, params: Params, user: ApiUser) -> Record:
        require_available(command, user)
        with self.world.lock:
            return self._handlers[command](params, user)

    # -- helpers -----------------------------------------------------------------------

    def _ref(self, command: str, params: Params, name: str, table: dict[str, Any]) -> Any:
        value = params.get(name)
        if value is None:
            return None
        if value not in table:
            raise no_such_entity(command, name, value)
        return table[value]

    def _acl(self, command: str, params: Params, user: ApiUser) -> Callable[[Owner], bool]:
        return acl(command, params, user, self.world, self.behaviour)

    def _page(
        self, command: str, params: Params, object_name: str, records: list[Record]
    ) -> Record:
        page, size = integer(command, params, "page"), integer(command, params, "pagesize")
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
            page_records = records
        else:
            size = size or self.default_page_size
            start = size * (page - 1) if page and page > 0 else 0
            page_records = records[start : start + size]
        body: Record = {}
        if records:
            body["count"] = len(records)
            if page_records:
                body[object_name] = page_records
        return body

    # -- lists -------------------------------------------------------------------------

    def _list_zones(self, params: Params, user: ApiUser) -> Record:
        zone = self._ref("listZones", params, "id", self.world.zones)
        zones = [z for z in self.world.zones.values() if zone in (None, z)]
        zones = [z for z in zones if params.get("name") in (None, z.name)]
        return self._page("listZones", params, "zone", [z.to_api() for z in zones])

    def _list_hosts(self, params: Params, user: ApiUser) -> Record:
        asked = details(params, HOST_DETAILS)
        host = self._ref("listHosts", params, "id", self.world.hosts)
        zone = self._ref("listHosts", params, "zoneid", self.world.zones)
        hosts = [
            shown(h.to_api(), asked, HOST_NOT_MIN)
            for h in self.world.hosts.values()
            if host in (None, h)
            and zone in (None, h.zone)
            and params.get("type") in (None, h.type)
            and params.get("name") in (None, h.name)
        ]
        return self._page("listHosts", params, "host", hosts)

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
        asked = details(params, VM_DETAILS)
        vm = self._ref(cmd, params, "id", self.world.vms)
        zone = self._ref(cmd, params, "zoneid", self.world.zones)
        host = self._ref(cmd, params, "hostid", self.world.hosts)
        seen = self._acl(cmd, params, user)
        vms = [
            v
            for v in self.world.vms.values()
            if vm in (None, v)
            and zone in (None, v.zone)
            and (host is None or v.host is host)
            and params.get("state") in (None, v.state)
            and params.get("name", "") in v.name  # ListVMsCmd: "a substring match is made"
            and seen(Owner(v.account, v.project))
        ]
        records = [shown(v.to_api(), asked, VM_NOT_MIN) for v in vms]
        if not is_root_admin(user):
            records = [restricted(r, VM_FULL_ONLY) for r in records]
        return self._page(cmd, params, "virtualmachine", records)

    def _list_volumes(self, params: Params, user: ApiUser) -> Record:
        cmd = "listVolumes"
        volume = self._ref(cmd, params, "id", self.world.volumes)
        zone = self._ref(cmd, params, "zoneid", self.world.zones)
        vm = self._ref(cmd, params, "virtualmachineid", self.world.vms)
        pool = (
            self._ref(cmd, params, "storageid", self.world.pools) if is_root_admin(user) else None
        )
        seen = self._acl(cmd, params, user)
        volumes = [
            v
            for v in self.world.volumes.values()
            if volume in (None, v)
            and zone in (None, v.zone)
            and (vm is None or v.vm is vm)
            and (pool is None or v.pool is pool)
            and params.get("type") in (None, v.type)
            and params.get("state") in (None, v.state)
            and params.get("name") in (None, v.name)
            and seen(Owner(v.account, v.project))
        ]
        return self._page(cmd, params, "volume", [self._volume_view(v, user) for v in volumes])

    @staticmethod
    def _volume_view(volume: Volume, user: ApiUser) -> Record:
        record = volume.to_api()
        return record if is_root_admin(user) else restricted(record, VOLUME_FULL_ONLY)

    def _list_snapshots(self, params: Params, user: ApiUser) -> Record:
        cmd = "listSnapshots"
        snapshot = self._ref(cmd, params, "id", self.world.snapshots)
        volume = self._ref(cmd, params, "volumeid", self.world.volumes)
        seen = self._acl(cmd, params, user)
        # QueryManagerImpl.searchForSnapshots: sc.setParameters("statusNEQ", Destroyed)
        snapshots = [
            s
            for s in self.world.snapshots.values()
            if snapshot in (None, s)
            and (volume is None or s.volume is volume)
            and s.state != "Destroyed"
            and seen(Owner(s.volume.account, s.volume.project))
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
        return self._page("listTags", params, "tag", self.tag_commands.list(params, user))

    def _tag_visible(self, params: Params, user: ApiUser, tag: Tag) -> bool:
        return self._acl("listTags", params, user)(Owner(tag.account, tag.project))

    def _get_user(self, params: Params, user: ApiUser) -> Record:
        """GetUserCmd (api/.../command/admin/user/GetUserCmd.java) with UserResponse's fields."""
        key = required("getUser", params, "userapikey")
        found = self.users.get(key)
        if found is None:
            raise ApiError(PARAM_ERROR, "User with specified API key does not exist")
        return {
            "user": {
                "id": make_id("user", found.username),
                "username": found.username,
                "account": found.account,
                "accounttype": found.account_type,
                "roletype": ROLE_TYPES[found.account_type],
                "domainid": DOMAIN_ID,
                "domain": "ROOT",
                "state": "enabled",
                "apikey": found.api_key,
            }
        }

    # -- async jobs ----------------------------------------------------------------------

    def _query_job(self, params: Params, user: ApiUser) -> Record:
        jobid = required("queryAsyncJobResult", params, "jobid")
        job = self.jobs.query(jobid)
        if job is None:
            raise no_such_entity("queryAsyncJobResult", "jobid", jobid)
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

    def _submit_tags(self, user: ApiUser, cmd_class: str, effect: Callable[[], Record]) -> Record:
        return self._submit(user, cmd_class, "None", "", effect)

    def _locked(self, effect: Callable[[], Record]) -> Record:
        with self.world.lock:
            return effect()

    def _update_volume(self, params: Params, user: ApiUser) -> Record:
        cmd = "updateVolume"
        if not is_root_admin(user):
            params = {k: v for k, v in params.items() if k not in UPDATE_VOLUME_ADMIN_ONLY}
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
            return {"volume": self._volume_view(volume, user)}

        by = (
            "admin.volume.UpdateVolumeCmdByAdmin"
            if is_root_admin(user)
            else "user.volume.UpdateVolumeCmd"
        )
        return self._submit(
            user, f"org.apache.cloudstack.api.command.{by}", "Volume", volume.id, effect
        )
