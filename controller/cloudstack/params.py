"""What CloudStack refuses in a request, refused here before it is sent: the answer would be
the same every time, and a local error names the value that is wrong.

- Any parameter value with an ASCII control character but line feed and carriage return:
  431 before the command runs (ApiServer.checkCharacterInkParams, CONTROL_CHARACTERS
  "[\\000-\\011\\013-\\014\\016-\\037\\177]" in server/src/main/java/com/cloud/api/ApiServer.java).
- A tag with an empty value: 431 "Value for the key ... is either null or empty"; two keys
  equal but for case: 530 from the unique key (resource_id, resource_type, key), compared
  ignoring case (server/src/main/java/com/cloud/tags/TaggedResourceManagerImpl.java).
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from controller.cloudstack.errors import CloudStackInvalidRequest

CONTROL_CHARACTERS = re.compile("[\x00-\x09\x0b\x0c\x0e-\x1f\x7f]")


def has_control_characters(value: str) -> bool:
    return CONTROL_CHARACTERS.search(value) is not None


def strip_control_characters(value: str) -> str:
    return CONTROL_CHARACTERS.sub("", value)


def check_params(command: str, params: Mapping[str, str]) -> None:
    for name, value in params.items():
        if has_control_characters(value):
            raise CloudStackInvalidRequest(
                f"{command}: parameter {name} has control characters, which CloudStack "
                f"refuses: {value!r}",
                command=command,
            )


def check_tags(tags: Mapping[str, str]) -> None:
    folded: dict[str, str] = {}
    for key, value in tags.items():
        if not key or not value:
            raise CloudStackInvalidRequest(
                f"createTags: tag {key!r} has an empty key or value, which CloudStack refuses",
                command="createTags",
            )
        other = folded.setdefault(key.lower(), key)
        if other != key:
            raise CloudStackInvalidRequest(
                f"createTags: tags {other!r} and {key!r} differ only in case: CloudStack "
                "keeps one tag per key whatever its case",
                command="createTags",
            )
