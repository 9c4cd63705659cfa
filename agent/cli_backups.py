"""`hostsnap backup | backups | restore`: backups of snapshots to secondary storage.

    hostsnap backup SNAPSHOT --target NAME [--full]
    hostsnap backup verify BACKUP --target NAME
    hostsnap backup delete BACKUP --target NAME [--with-descendants]
    hostsnap backup target add NAME --repository DIR|s3:URL [--limit-upload-kib N]
    hostsnap backup target list
    hostsnap backups [DOMAIN] --target NAME
    hostsnap restore BACKUP --target NAME --to PATH|POOL/IMAGE | --in-place

`backup target` works on this host's files (/etc/hostsnap/backup-targets) without the agent."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from typing import Any

from agent.cli_jobs import wait_for
from agent.cli_output import as_json, table
from hostsnap.agent.v1 import agent_pb2 as pb

Command = Callable[[str, Callable[[Any, argparse.Namespace], int], str], argparse.ArgumentParser]
# `hostsnap backup verify ...` is parsed as the command `backup-verify ...`.
ACTIONS = ("verify", "delete", "target")
LOCAL = ("backup-target",)


# The global options that take a value (the word after them is not the command).
VALUED_OPTIONS = ("--socket", "--endpoint", "--cert", "--key", "--ca", "--timeout", "--config")


def rewritten(argv: list[str]) -> list[str]:
    """The command line with `backup ACTION` made one command, `backup-ACTION`."""
    index = 0
    while index < len(argv) and argv[index].startswith("-"):
        index += 2 if argv[index] in VALUED_OPTIONS else 1
    if argv[index : index + 1] == ["backup"] and argv[index + 1 : index + 2] in [
        [a] for a in ACTIONS
    ]:
        return [*argv[:index], f"backup-{argv[index + 1]}", *argv[index + 2 :]]
    return argv


def cmd_backup(stub: Any, args: argparse.Namespace) -> int:
    request = pb.BackupSnapshotRequest(
        snapshot_id=args.snapshot,
        target=args.target,
        domain=args.domain or "",
        full=args.full,
        idempotency_key=args.idempotency_key or "",
    )
    return wait_for(stub, stub.BackupSnapshot(request, timeout=args.timeout), args)


def cmd_verify(stub: Any, args: argparse.Namespace) -> int:
    request = pb.VerifyBackupRequest(backup_id=args.backup, target=args.target)
    return wait_for(stub, stub.VerifyBackup(request, timeout=args.timeout), args)


def cmd_delete(stub: Any, args: argparse.Namespace) -> int:
    request = pb.DeleteBackupRequest(
        backup_id=args.backup,
        target=args.target,
        with_descendants=args.with_descendants,
        idempotency_key=args.idempotency_key or "",
    )
    return wait_for(stub, stub.DeleteBackup(request, timeout=args.timeout), args)


def cmd_restore(stub: Any, args: argparse.Namespace) -> int:
    request = pb.RestoreBackupRequest(
        backup_id=args.backup,
        target=args.target,
        to=args.to or "",
        idempotency_key=args.idempotency_key or "",
        in_place=args.in_place,
    )
    return wait_for(stub, stub.RestoreBackup(request, timeout=args.timeout), args)


def cmd_backups(stub: Any, args: argparse.Namespace) -> int:
    request = pb.ListBackupsRequest(target=args.target, domain=args.domain or "")
    found = stub.ListBackups(request, timeout=args.timeout)
    if args.json:
        print(as_json(list(found.backups)))
        return 0
    rows = [
        (
            b.id,
            b.volume,
            b.snapshot_id,
            "full" if not b.parent_id else f"over {b.parent_id[:8]}",
            b.backed_up_at.ToDatetime().isoformat(timespec="seconds") + "Z",
            f"{b.data_bytes / 2**20:.1f}",
            f"{b.stored_bytes / 2**20:.1f}",
        )
        for b in found.backups
    ]
    headers = ["id", "volume", "snapshot", "kind", "backed up", "data MiB", "stored MiB"]
    print(table(headers, rows))
    return 0


def cmd_target(stub: Any, args: argparse.Namespace) -> int:
    """On this host's files, without the agent (root)."""
    from agent.backups import targets
    from agent.errors import HostsnapError
    from agent.settings import ConfigError, load
    from agent.wiring import repository

    try:
        config = load(args.config).agent
        directory = config.backup_targets_dir
        if args.action == "list":
            rows = [(n, targets.load(directory, n).repository) for n in targets.names(directory)]
            print(json.dumps(dict(rows)) if args.json else table(["target", "repository"], rows))
            return 0
        added = targets.add(
            directory, args.name, args.repository, args.limit_upload_kib, args.credentials_file
        )
        store = repository(config, added)
        if not store.exists():
            store.init()
    except ConfigError as e:
        print(f"hostsnap: configuration error: {e}", file=sys.stderr)
        return 2
    except HostsnapError as e:
        print(f"hostsnap: {e} [{e.reason}]", file=sys.stderr)
        return 1
    print(
        f"backup target {added.name}: {added.repository}\n"
        f"its key: {added.key_file} -- keep a copy off this host: without it no backup on the "
        "target can be read"
    )
    return 0


def add_commands(command: Command) -> list[argparse.ArgumentParser]:
    """Adds the backup commands; returns those that start jobs."""
    p = command(
        "backup",
        cmd_backup,
        "back a snapshot up to a backup target (also: backup verify|delete|target)",
    )
    p.add_argument("snapshot", help="the snapshot id")
    p.add_argument("--full", action="store_true", help="a full backup, not an incremental one")
    p.add_argument("--domain", help="the domain the snapshot must belong to")
    jobs = [p]
    p = command("backup-verify", cmd_verify, "read a backup back from its target and check it")
    p.add_argument("backup", help="the backup id")
    jobs.append(p)
    p = command("backup-delete", cmd_delete, "remove a backup from its target")
    p.add_argument("backup", help="the backup id")
    p.add_argument(
        "--with-descendants", action="store_true", help="and the backups that build on it"
    )
    jobs.append(p)
    p = command("restore", cmd_restore, "rebuild a volume from a backup, new or in place")
    p.add_argument("backup", help="the backup id")
    onto = p.add_mutually_exclusive_group(required=True)
    onto.add_argument("--to", help="a new qcow2 file's path, or pool/image (RBD)")
    onto.add_argument(
        "--in-place",
        action="store_true",
        help="onto the backup's own volume, which must be stopped (what it held is kept)",
    )
    jobs.append(p)
    for p in jobs:
        p.add_argument("--target", required=True, help="the backup target's name")
    p = command("backups", cmd_backups, "a backup target's backups, oldest first")
    p.add_argument("domain", nargs="?")
    p.add_argument("--target", required=True, help="the backup target's name")
    p = command("backup-target", cmd_target, "this host's backup targets (no agent needed)")
    actions = p.add_subparsers(dest="action", required=True)
    actions.add_parser("list", help="the targets")
    add = actions.add_parser("add", help="a new target: its file, its key, its repository")
    add.add_argument("name")
    add.add_argument("--repository", required=True, help="a directory, or s3:URL/bucket")
    add.add_argument("--limit-upload-kib", type=int, default=0, help="KiB/s (0: no limit)")
    add.add_argument("--credentials-file", default="", help="S3: a file of AWS_* lines")
    return jobs
