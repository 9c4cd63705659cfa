"""The controller needs a root admin's API key, and checks so before it acts.

A root admin's calls run the *ByAdmin command classes (ResponseView.Full: ApiServer.getCmdClass
in server/src/main/java/com/cloud/api/ApiServer.java). With anyone else's key CloudStack
leaves out a volume's `path`, `storageid` and `storage` (VolumeJoinDaoImpl) and a VM's
`instancename` and `hostid` (UserVmJoinDaoImpl), silently ignores updateVolume's `path`,
`state`, `storageid` and `chaininfo` (authorized = {RoleType.Admin} in UpdateVolumeCmd.java;
BaseCmd drops such parameters), and refuses listConfigurations. The controller would run
with empty paths and fix nothing, so it refuses to start instead.

getUser (api/.../command/admin/user/GetUserCmd.java) gives the key's `accounttype`
(Account.Type ordinal, 1 for a root admin) and `roletype`; a role without getUser is not a
root admin's either.
"""

from __future__ import annotations

from controller.cloudstack.client import CloudStackClient
from controller.cloudstack.errors import UNAUTHORIZED, CloudStackApiError, CloudStackError

ROOT_ADMIN = 1
# ApiServer.commandAvailable: 401 for a command the role lacks, 432 (UNSUPPORTED_ACTION_ERROR)
# when a checker calls it unavailable; the key itself was just seen to work.
UNAVAILABLE = frozenset({UNAUTHORIZED, 432})
_WHY = (
    "CloudStack shows volume paths, storage ids and VM host ids only to root admins, ignores "
    "updateVolume's path from anyone else and refuses others listConfigurations"
)


class CloudStackRoleError(CloudStackError):
    """The API key works but is not a root admin's."""


async def require_root_admin(client: CloudStackClient, *, timeout: float | None = None) -> str:
    """The key's account name; CloudStackRoleError when it is not a root admin's (the
    CloudStackError of a key that does not work at all, as it is)."""
    await client.request("listZones", timeout=timeout)  # the key and its signature work
    try:
        body = await client.request("getUser", {"userapikey": client.api_key}, timeout=timeout)
    except CloudStackApiError as exc:
        if exc.errorcode not in UNAVAILABLE:
            raise
        raise CloudStackRoleError(
            "the CloudStack API key may not call getUser, so it cannot be shown to be a root "
            f"admin's; hostsnap needs a root admin's key whose role may call getUser: {_WHY}",
            command="getUser",
        ) from exc
    user = body.get("user")
    record = user if isinstance(user, dict) else {}
    account = str(record.get("account", "?"))
    if record.get("accounttype") != ROOT_ADMIN:
        role = record.get("roletype") or f"account type {record.get('accounttype')!r}"
        raise CloudStackRoleError(
            f"the CloudStack API key is that of account {account!r} ({role}); hostsnap "
            f"needs a root admin's key: {_WHY}",
            command="getUser",
        )
    return account
