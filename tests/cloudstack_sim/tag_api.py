"""createTags, deleteTags and listTags as CloudStack 4.19-4.21 run them.

Copied from server/src/main/java/com/cloud/tags/TaggedResourceManagerImpl.java (createTags,
deleteTags), api/src/main/java/org/apache/cloudstack/api/command/user/tag/DeleteTagsCmd.java
(getTags, execute) and CreateTagsCmd.java with api/.../TaggedResources.java (parseKeyValueMap):

- deleteTags matches keys and values ignoring case; a `tags[i].value` that is given, even
  empty, must equal the tag's value, and only an absent value deletes by key alone.
- When nothing matched, DeleteTagsCmd fails the job with 530 "Failed to delete tags"; older
  releases threw 431 "Unable to find any tags which conform to specified delete parameters."
  (`Behaviour.delete_tags_none_found`).
- createTags refuses an empty value (431) and a key the resource already has (530 from the
  unique key (resource_id, resource_type, key), which MySQL's utf8 collation compares
  ignoring case); the job's transaction writes all of its tags or none.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from .access import Behaviour
from .auth import ApiUser
from .checks import CS_INVALID_PARAMETER, INTERNAL_ERROR, PARAM_ERROR, Params, required
from .jobs import ApiError
from .world import Tag, World

TAGGABLE = frozenset({"Volume", "UserVm", "Snapshot"})
_TAG_PARAM = re.compile(r"^tags\[(\d+)\]\.(key|value)$")

Record = dict[str, Any]
Submit = Callable[[ApiUser, str, Callable[[], Record]], Record]
Visible = Callable[[Params, ApiUser, Tag], bool]

CREATE_CMD = "org.apache.cloudstack.api.command.user.tag.CreateTagsCmd"
DELETE_CMD = "org.apache.cloudstack.api.command.user.tag.DeleteTagsCmd"


class TagCommands:
    def __init__(
        self, world: World, submit: Submit, visible: Visible, behaviour: Behaviour
    ) -> None:
        self.world = world
        self._submit = submit
        self._visible = visible
        self._behaviour = behaviour

    def create(self, params: Params, user: ApiUser) -> Record:
        entries = tag_entries("createTags", params)
        if not entries:
            required("createTags", params, "tags")
        kind, ids = tag_target("createTags", params)

        def effect() -> Record:
            keys = [key for key, _ in entries]
            duplicate = next((k for k in keys if keys.count(k) > 1), None)
            if duplicate is not None:  # Collectors.toMap on a repeated key
                raise ApiError(INTERNAL_ERROR, f"Duplicate key {duplicate}")
            made: list[Tag] = []
            for key, value in entries:
                for resource_id in ids:
                    if not self.world.resource_exists(kind, resource_id):
                        raise ApiError(
                            PARAM_ERROR,
                            f"Unable to find resource by id {resource_id} and type {kind}",
                        )
                    if not value:
                        raise ApiError(
                            PARAM_ERROR, f"Value for the key {key} is either null or empty"
                        )
                    if any(_same_slot(t, kind, resource_id, key) for t in self.world.tags + made):
                        raise ApiError(
                            INTERNAL_ERROR, f"tag {key} already on {kind} with id {resource_id}"
                        )
                    owner = self.world.owner_of(kind, resource_id)
                    made.append(Tag(key, value, kind, resource_id, owner.account, owner.project))
            self.world.tags.extend(made)
            return {"success": True}

        return self._submit(user, CREATE_CMD, effect)

    def delete(self, params: Params, user: ApiUser) -> Record:
        wanted: dict[str, str | None] = {}
        for key, value in tag_entries("deleteTags", params):
            wanted[key] = value  # HashMap.put: a repeated key keeps its last value
        kind, ids = tag_target("deleteTags", params)

        def effect() -> Record:
            doomed = [
                t
                for t in self.world.tags
                if t.resource_type == kind and t.resource_id in ids and _matches(t, wanted)
            ]
            if not doomed:
                if self._behaviour.delete_tags_none_found == PARAM_ERROR:
                    raise ApiError(
                        PARAM_ERROR,
                        "Unable to find any tags which conform to specified delete parameters.",
                    )
                raise ApiError(INTERNAL_ERROR, "Failed to delete tags")
            self.world.tags[:] = [t for t in self.world.tags if t not in doomed]
            return {"success": True}

        return self._submit(user, DELETE_CMD, effect)

    def list(self, params: Params, user: ApiUser) -> list[Record]:
        return [
            t.to_api()
            for t in self.world.tags
            if params.get("resourcetype") in (None, t.resource_type)
            and params.get("resourceid") in (None, t.resource_id)
            and params.get("key") in (None, t.key)
            and params.get("value") in (None, t.value)
            and self._visible(params, user, t)
        ]


def _same_slot(tag: Tag, kind: str, resource_id: str, key: str) -> bool:
    return tag.resource_type == kind and tag.resource_id == resource_id and _eq(tag.key, key)


def _matches(tag: Tag, wanted: dict[str, str | None]) -> bool:
    if not wanted:
        return True  # no tags given: every tag of the resources
    for key, value in wanted.items():
        if _eq(tag.key, key) and (value is None or _eq(tag.value, value)):
            return True
    return False


def _eq(a: str, b: str) -> bool:
    return a.lower() == b.lower()  # Java's equalsIgnoreCase, near enough for tag text


def tag_entries(command: str, params: Params) -> list[tuple[str, str | None]]:
    """(key, value) of each `tags[i]` in index order; value None when not sent."""
    entries: dict[int, dict[str, str]] = {}
    for name, value in params.items():
        match = _TAG_PARAM.match(name)
        if match:
            entries.setdefault(int(match[1]), {})[match[2]] = value
    return [(e["key"], e.get("value")) for _, e in sorted(entries.items()) if "key" in e]


def tag_target(command: str, params: Params) -> tuple[str, list[str]]:
    kind = required(command, params, "resourcetype")
    ids = [i for i in required(command, params, "resourceids").split(",") if i]
    if kind not in TAGGABLE:
        raise ApiError(PARAM_ERROR, f"Invalid resource type: {kind}", CS_INVALID_PARAMETER)
    return kind, ids
