"""Who sees what: the caller's role and the projects rule of CloudStack's list commands.

Copied from server/src/main/java/com/cloud/user/AccountManagerImpl.java
(buildACLSearchParameters, buildACLViewSearchBuilder) for one domain:

- Without `projectid` a list skips project resources (SkipProjectResources), unless it asks
  for one `id`. A normal user sees only its own account; an admin without `listall=true`
  only its own account too, except when it asks for one `id`.
- `projectid=-1` lists project resources only (ListProjectResourcesOnly); with
  `listall=true`, releases since ListAllIncludingProjectResources list those and every other
  resource, older ones still the project resources only (`Behaviour.projects_with_listall`).
- A normal user or domain admin is in no project here, so `projectid=-1` gives it its own
  account's resources at most.

A command the caller's role may not call is answered as ApiServer.commandAvailable answers
it (server/src/main/java/com/cloud/api/ApiServer.java): 401 "The given command '...' either
does not exist, is not available for user.". Which role may call what is the role's
permissions in CloudStack's database, not its Java; here the admin commands the controller
uses are a root admin's only (`AVAILABLE_TO`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

from .auth import ApiUser
from .checks import UNAUTHORIZED, Params, no_such_entity
from .jobs import ApiError
from .world import Owner, World

# Account.Type ordinals, as getUser's `accounttype` gives them.
NORMAL, ADMIN, DOMAIN_ADMIN = 0, 1, 2
ROLE_TYPES = {NORMAL: "User", ADMIN: "Admin", DOMAIN_ADMIN: "DomainAdmin"}
# Commands not every role may call, and the account types that may (every other command:
# all of them). getUser is given to domain admins too, so that a test sees its answer for one.
AVAILABLE_TO = {
    "listHosts": frozenset({ADMIN}),
    "listStoragePools": frozenset({ADMIN}),
    "listConfigurations": frozenset({ADMIN}),
    "getUser": frozenset({ADMIN, DOMAIN_ADMIN}),
}


@dataclass
class Behaviour:
    """What differs between the CloudStack releases the controller meets."""

    delete_tags_none_found: int = 530  # 431 before DeleteTagsCmd checked the result
    projects_with_listall: bool = True  # projectid=-1&listall=true lists non-project ones too


def is_root_admin(user: ApiUser) -> bool:
    return user.account_type == ADMIN


def require_available(command: str, user: ApiUser) -> None:
    if user.account_type not in AVAILABLE_TO.get(command, frozenset({user.account_type})):
        raise ApiError(
            UNAUTHORIZED,
            f"The given command '{command}' either does not exist, is not available for user.",
        )


def acl(
    command: str, params: Params, user: ApiUser, world: World, behaviour: Behaviour
) -> Callable[[Owner], bool]:
    """Whether a record of this owner is in the answer to this list request."""
    listall = params.get("listall", "").lower() == "true"
    by_id = "id" in params
    project_ref = params.get("projectid")
    root = is_root_admin(user)
    if project_ref is not None and project_ref != "-1":
        project = world.projects.get(project_ref)
        if project is None:
            raise no_such_entity(command, "projectid", project_ref)
        return lambda owner: owner.project is project
    if project_ref == "-1":
        everything = listall and behaviour.projects_with_listall
        if not root:  # member of no project: its own account at most
            return lambda owner: everything and owner.account == user.account
        return lambda owner: everything or owner.project is not None

    def skip_projects(owner: Owner) -> bool:
        return by_id or owner.project is None

    if user.account_type == NORMAL or (not listall and not by_id):
        return lambda owner: skip_projects(owner) and owner.account == user.account
    return skip_projects
