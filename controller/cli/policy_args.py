"""`policies add`'s arguments as a controller.policies.Policy.

What `policies add` refused before the store kept that one model, it refuses still, first and
with the same messages (a cron expression of five fields, so no @daily: CloudStack has no cron
to take one; CloudStack's schedule form as numbers in range; a known time zone; settings the
store keeps). The policy's own reading of its schedule follows, as it did then.
"""

from __future__ import annotations

import argparse
import re
import uuid
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from controller import policies
from controller.cli import CommandError
from controller.policies.policy import MAX_NAME

_CRON_FIELD = re.compile(r"^[0-9A-Za-z*,/\-?]+$")
# CloudStack's `schedule` per intervaltype: MM, MM:HH, MM:HH:DD, each number within its range
# (DD is the day of the week for WEEKLY, of the month for MONTHLY).
_MINUTE, _HOUR = (0, 59), (0, 23)
_FORMS = {
    "HOURLY": (_MINUTE,),
    "DAILY": (_MINUTE, _HOUR),
    "WEEKLY": (_MINUTE, _HOUR, (1, 7)),
    "MONTHLY": (_MINUTE, _HOUR, (1, 28)),
}


def new_policy(args: argparse.Namespace) -> policies.Policy:
    """Raises CommandError with what is wrong; nothing is stored then."""
    try:
        _check_schedule(args)
        tags = _check_selector(args)
        _check_settings(args, tags)
        if args.cron:
            schedule = policies.Schedule.cron(args.cron, args.timezone)
        else:
            schedule = policies.Schedule.cloudstack(args.interval, args.schedule, args.timezone)
        return policies.Policy(
            id=str(uuid.uuid4()),
            name=args.name,
            schedule=schedule,
            max_snaps=args.maxsnaps,
            selector=policies.Selector(
                vms=tuple(args.vm),
                volumes=tuple(args.volume),
                tags=tags,
                accounts=tuple(args.account),
            ),
            quiesce=policies.Quiesce(args.quiesce),
            enabled=not args.disabled,
            backup_target=args.backup,
            keep_backups=args.keep_backups,
        )
    except ValueError as e:
        raise CommandError(str(e)) from None


def _check_schedule(args: argparse.Namespace) -> None:
    if args.cron:
        fields = args.cron.split()
        if len(fields) != 5 or not all(_CRON_FIELD.match(f) for f in fields):
            raise ValueError(f"cron expression {args.cron!r} is not five cron fields")
    else:
        if not args.schedule:
            raise CommandError("--interval needs --schedule (MM, MM:HH or MM:HH:DD)")
        form, parts = _FORMS[args.interval], args.schedule.split(":")
        if len(parts) != len(form) or not all(p.isdigit() for p in parts):
            raise ValueError(
                f"{args.interval} schedule {args.schedule!r} is not {len(form)} numbers"
            )
        for part, (low, high) in zip(parts, form, strict=True):
            if not low <= int(part) <= high:
                raise ValueError(f"{args.interval} schedule {args.schedule!r} out of range")
    try:
        ZoneInfo(args.timezone)
    except (ZoneInfoNotFoundError, ValueError, OSError):
        raise ValueError(f"unknown time zone {args.timezone!r}") from None


def _check_selector(args: argparse.Namespace) -> tuple[policies.TagMatch, ...]:
    for kind, values in (("vm", args.vm), ("volume", args.volume)):
        if any(not v.strip() for v in values):
            raise ValueError(f"a {kind} selector needs a value")
    tags = tuple(policies.TagMatch(*_key_value(t)) for t in args.tag)
    if any(not a.strip() for a in args.account):
        raise ValueError("a account selector needs a value")
    if not (args.vm or args.volume or tags or args.account):
        raise CommandError("a policy needs --vm, --volume, --tag or --account")
    return tags


def _check_settings(args: argparse.Namespace, tags: tuple[policies.TagMatch, ...]) -> None:
    if not args.name or len(args.name) > MAX_NAME:
        raise ValueError(f"a policy needs a name of at most {MAX_NAME} characters")
    if args.maxsnaps < 1:
        raise ValueError("max_snaps must be at least 1")
    given = [
        *(("vm", v) for v in args.vm),
        *(("volume", v) for v in args.volume),
        *(("tag", t) for t in tags),
        *(("account", a) for a in args.account),
    ]
    if len(set(given)) != len(given):
        raise ValueError("a selector is given twice")


def _key_value(text: str) -> tuple[str, str]:
    key, equals, value = text.partition("=")
    if not equals or not key.strip() or not value.strip():
        raise CommandError(f"--tag {text!r}: write key=value")
    return key.strip(), value.strip()
