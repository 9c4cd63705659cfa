"""The backup commands' command line: `backup ACTION` is its own command, whatever global
options come before it; a snapshot id is never taken for an action."""

from __future__ import annotations

import pytest

from agent import cli
from agent.cli_backups import rewritten


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["backup", "verify", "b", "--target", "t"], ["backup-verify", "b", "--target", "t"]),
        (
            ["--socket", "/s", "--json", "backup", "delete", "b"],
            ["--socket", "/s", "--json", "backup-delete", "b"],
        ),
        (["backup", "target", "list"], ["backup-target", "list"]),
        (["backup", "a" * 32, "--target", "t"], ["backup", "a" * 32, "--target", "t"]),
        (["--config", "backup", "snapshots", "vm"], ["--config", "backup", "snapshots", "vm"]),
        ([], []),
    ],
)
def test_backup_actions_are_commands_of_their_own(argv: list[str], expected: list[str]):
    assert rewritten(argv) == expected


def test_the_parser_knows_each_backup_command():
    parser = cli.build_parser()

    made = parser.parse_args(rewritten(["backup", "a" * 32, "--target", "t", "--full"]))
    verify = parser.parse_args(rewritten(["backup", "verify", "b" * 32, "--target", "t"]))
    restore = parser.parse_args(["restore", "b" * 32, "--target", "t", "--to", "rbd/new"])
    add = parser.parse_args(rewritten(["backup", "target", "add", "t", "--repository", "/srv"]))

    assert (made.command, made.snapshot, made.full) == ("backup", "a" * 32, True)
    assert (verify.command, verify.backup) == ("backup-verify", "b" * 32)
    assert (restore.to, restore.target) == ("rbd/new", "t")
    assert (add.action, add.name, add.repository) == ("add", "t", "/srv")
    with pytest.raises(SystemExit):
        parser.parse_args(["restore", "b" * 32, "--target", "t"])  # --to is required
