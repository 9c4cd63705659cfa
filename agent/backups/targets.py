"""Backup targets: one directory of files per host (/etc/hostsnap/backup-targets), a
`NAME.toml` (where the repository is, how fast to send) and `NAME.key` (the repository's
password, 0600, root's alone) for each target.

    repository = "/mnt/secondary/hostsnap"        # a directory: an NFS mount in production
    repository = "s3:http://rgw.example:7480/hostsnap"     # S3 (radosgw, AWS, MinIO)
    limit_upload_kib = 0                          # KiB/s, 0: no limit
    credentials_file = "/etc/hostsnap/backup-targets/NAME.s3"  # S3: AWS_* lines

The key never goes to the target: restic encrypts with a master key it keeps in the repository
wrapped by this password. Losing every copy of the key loses every backup of the target."""

from __future__ import annotations

import os
import secrets
import tomllib
from dataclasses import dataclass
from pathlib import Path

from agent import validate
from agent.errors import InvalidArgument, NotFound, Precondition

KEY_BYTES = 32


@dataclass(frozen=True)
class Target:
    name: str
    repository: str
    key_file: Path
    limit_upload_kib: int = 0
    credentials_file: str = ""

    @property
    def is_directory(self) -> bool:
        return self.repository.startswith("/")

    def credentials(self) -> dict[str, str]:
        """The S3 credentials file's KEY=VALUE lines (AWS_ACCESS_KEY_ID, ...)."""
        if not self.credentials_file:
            return {}
        found = {}
        for line in Path(self.credentials_file).read_text().splitlines():
            key, eq, value = line.partition("=")
            if eq and key.strip().startswith("AWS_"):
                found[key.strip()] = value.strip()
        return found


def path_of(directory: Path, name: str) -> Path:
    return directory / f"{validate.target_name(name)}.toml"


def load(directory: Path, name: str) -> Target:
    path = path_of(directory, name)
    if not path.exists():
        raise NotFound(
            f"no backup target {name!r} on this host ({path} does not exist; "
            "`hostsnap backup target add` makes one)",
            reason="TARGET_NOT_FOUND",
        )
    try:
        raw = tomllib.loads(path.read_text())
    except (OSError, tomllib.TOMLDecodeError) as e:
        raise Precondition(f"{path}: {e}", reason="TARGET_CONFIG_INVALID") from e
    repository = raw.get("repository")
    if not isinstance(repository, str) or not repository:
        raise Precondition(f"{path}: no repository", reason="TARGET_CONFIG_INVALID")
    key_file = directory / f"{name}.key"
    if not key_file.exists():
        raise Precondition(
            f"the key of backup target {name} ({key_file}) is missing: without it the target's "
            "backups cannot be read or written",
            reason="TARGET_KEY_MISSING",
        )
    return Target(
        name,
        repository,
        key_file,
        int(raw.get("limit_upload_kib", 0)),
        str(raw.get("credentials_file", "")),
    )


def names(directory: Path) -> list[str]:
    if not directory.is_dir():
        return []
    return sorted(p.stem for p in directory.glob("*.toml"))


def add(
    directory: Path, name: str, repository: str, limit_upload_kib: int = 0, credentials: str = ""
) -> Target:
    """Writes the target's file and a new random key (refused when the target exists)."""
    path = path_of(directory, name)
    if path.exists():
        raise Precondition(f"backup target {name} exists already ({path})", reason="TARGET_EXISTS")
    if not (repository.startswith("/") or repository.startswith("s3:")):
        raise InvalidArgument(
            f"repository {repository!r}: an absolute directory or s3:URL/bucket",
            reason="INVALID_REPOSITORY",
        )
    if limit_upload_kib < 0:
        raise InvalidArgument("limit_upload_kib must not be negative")
    directory.mkdir(parents=True, exist_ok=True)
    key_file = directory / f"{name}.key"
    if not key_file.exists():  # a key kept from before (restored from escrow) is used
        write_key(key_file, new_key())
    lines = [f"repository = {_toml(repository)}", f"limit_upload_kib = {limit_upload_kib}"]
    if credentials:
        lines.append(f"credentials_file = {_toml(credentials)}")
    path.write_text("\n".join(lines) + "\n")
    return load(directory, name)


def new_key() -> str:
    return secrets.token_urlsafe(KEY_BYTES)


def write_key(path: Path, key: str) -> None:
    """Written whole or not at all, readable by root alone."""
    temporary = path.with_name(f".{path.name}.new")
    fd = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(key + "\n")
        f.flush()
        os.fsync(f.fileno())
    os.replace(temporary, path)


def _toml(value: str) -> str:
    return '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"'
