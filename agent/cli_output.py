"""How the `hostsnap` CLI prints: aligned tables for people, JSON for scripts."""

from __future__ import annotations

import inspect
import json
import sys
from collections.abc import Sequence
from typing import Any

from google.protobuf import json_format
from google.protobuf.message import Message


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    cells = [[str(c) for c in row] for row in rows]
    widths = [max([len(h), *(len(r[i]) for r in cells)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.upper().ljust(w) for h, w in zip(headers, widths, strict=True)).rstrip()]
    lines += ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    return "\n".join(lines)


# Fields at their default value (frozen: false, progress: 0) are printed too; the option was
# renamed in protobuf 26 (Debian 12 has 3.21).
_ALL_FIELDS = (
    "always_print_fields_with_no_presence"
    if "always_print_fields_with_no_presence"
    in inspect.signature(json_format.MessageToDict).parameters
    else "including_default_value_fields"
)


def as_json(message: Message | Sequence[Message]) -> str:
    def one(m: Message) -> dict[str, Any]:
        options: dict[str, Any] = {"preserving_proto_field_name": True, _ALL_FIELDS: True}
        return json_format.MessageToDict(m, **options)

    data: Any = [one(m) for m in message] if isinstance(message, Sequence) else one(message)
    return json.dumps(data, indent=2, sort_keys=True)


def progress(text: str) -> None:
    """One line of progress on stderr, rewritten in place on a terminal."""
    if sys.stderr.isatty():
        sys.stderr.write(f"\r\033[K{text}")
    else:
        sys.stderr.write(text + "\n")
    sys.stderr.flush()


def end_progress() -> None:
    if sys.stderr.isatty():
        sys.stderr.write("\n")
