"""A backup target's restic repository (restic 0.14+, Debian's `restic`): encrypted
(AES-256 in counter mode with Poly1305-AES), zstd-compressed (repository version 2),
content-deduplicated, checked by `restic check`. hostsnap keeps one stream per backup in it
(`backup --stdin`) and finds its backups by their tags.

Only `forget`/`prune` take restic's exclusive lock; they are retried while another client
(another host backing up to the same target) holds a lock, and stale locks (of a restic that
died) are removed before each retry."""

from __future__ import annotations

import json
import logging
import os
import subprocess
import threading
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import IO

from agent.errors import (
    Capacity,
    Damaged,
    HostsnapError,
    OperationFailed,
    Precondition,
    Unavailable,
)

log = logging.getLogger(__name__)

LOCKED = "repository is already locked"
LOCK_RETRIES = (1.0, 2.0, 5.0, 10.0, 20.0)
TIMEOUT = 600.0  # a metadata command (snapshots, forget, init); streams have none
DIE_WITH_PARENT = ("setpriv", "--pdeathsig", "KILL")


@dataclass(frozen=True)
class Snapshot:
    id: str
    time: str
    hostname: str
    paths: tuple[str, ...]
    tags: tuple[str, ...]


@dataclass(frozen=True)
class Uploaded:
    snapshot_id: str  # restic's short id, as `backup` prints it
    bytes_read: int  # the stream's bytes
    # What the repository grew by: after dedup and compression from restic 0.17 on
    # (data_added_packed); restic before 0.17 reports it before compression.
    bytes_added: int


class ResticRepository:
    def __init__(
        self,
        repository: str,
        password_file: str,
        env: Mapping[str, str] | None = None,
        limit_upload_kib: int = 0,
        cache_dir: str | None = None,
    ) -> None:
        self.repository = repository
        self._env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": os.environ.get("HOME", "/root"),
            "RESTIC_REPOSITORY": repository,
            "RESTIC_PASSWORD_FILE": password_file,
            **(env or {}),
        }
        self._cache = ["--cache-dir", cache_dir] if cache_dir else ["--no-cache"]
        self._limits = ["--limit-upload", str(limit_upload_kib)] if limit_upload_kib else []

    def _argv(self, *args: str) -> list[str]:
        # restic dies with the agent (SIGKILL included): a backup whose agent died must not
        # go on to store the stream as it was cut (stdin closed looks like its end).
        return [*DIE_WITH_PARENT, "restic", *self._cache, *args]

    def _run(self, *args: str) -> str:
        """A metadata command, again while the repository is locked (restic 0.14 has no
        --retry-lock): a prune elsewhere holds it exclusively for a while."""
        delays = iter(LOCK_RETRIES if args[0] != "unlock" else ())
        while True:
            try:
                done = subprocess.run(
                    self._argv(*args),
                    capture_output=True,
                    text=True,
                    env=self._env,
                    timeout=TIMEOUT,
                    check=False,
                )
            except FileNotFoundError as e:
                raise OperationFailed("restic is not installed on this host") from e
            except subprocess.TimeoutExpired as e:
                raise Unavailable(f"restic {args[0]} on {self.repository} timed out") from e
            if done.returncode == 0:
                return done.stdout
            if LOCKED in done.stderr:
                delay = next(delays, None)
                if delay is not None:
                    # A lock whose restic died (with its agent) is stale: removed here. A
                    # live one (another host's backup) stays, and is waited for.
                    self._run("unlock")
                    log.info(
                        "restic %s: %s locked, again in %.0f s", args[0], self.repository, delay
                    )
                    time.sleep(delay)
                    continue
            raise _failure(f"restic {args[0]} on {self.repository}", done.stderr)

    def free_bytes(self) -> int | None:
        """The bytes free where a directory repository lives; None for S3 (its quota, if
        any, is the server's to enforce)."""
        if not self.repository.startswith("/"):
            return None
        probe = self.repository
        while not os.path.exists(probe):  # a repository not made yet: its parent's
            probe = os.path.dirname(probe)
        st = os.statvfs(probe)
        return st.f_bavail * st.f_frsize

    def present(self) -> bool:
        """Whether a repository is there: for a directory its config file (no restic run,
        whose key derivation costs 0.7 s; the key is proven by the command that follows),
        elsewhere whether restic opens it."""
        if self.repository.startswith("/"):
            return os.path.isfile(os.path.join(self.repository, "config"))
        return self.exists()

    def exists(self) -> bool:
        """Whether restic opens a repository there with the key (TARGET_KEY_WRONG if not)."""
        try:
            self._run("cat", "config")
        except OperationFailed as e:
            if "unable to open config file" in str(e):
                return False
            raise
        return True

    def init(self) -> None:
        self._run("init", "--repository-version", "2")

    def snapshots(self, tags: Sequence[str] = ()) -> list[Snapshot]:
        args = ["snapshots", "--json", *(a for t in tags for a in ("--tag", t))]
        return [
            Snapshot(
                s["id"],
                s["time"],
                s.get("hostname", ""),
                tuple(s.get("paths") or ()),
                tuple(s.get("tags") or ()),
            )
            for s in json.loads(self._run(*args) or "[]")
        ]

    def backup(
        self, filename: str, tags: Sequence[str], host: str, produce: Callable[[IO[bytes]], None]
    ) -> Uploaded:
        """One snapshot holding `filename`, whose bytes `produce` writes. If `produce` fails,
        restic is killed before it sees the stream end: no snapshot is made of a partial
        stream (its packs stay unreferenced until a prune)."""
        argv = self._argv(
            "backup", "--stdin", "--stdin-filename", filename, "--host", host, "--json",
            *self._limits, *(a for t in tags for a in ("--tag", t)),
        )  # fmt: skip
        proc = subprocess.Popen(
            argv,
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env,
        )
        assert proc.stdin is not None and proc.stdout is not None and proc.stderr is not None
        out: list[bytes] = []
        err: list[bytes] = []
        readers = [_drain(proc.stdout, out), _drain(proc.stderr, err)]
        try:
            produce(proc.stdin)
        except BrokenPipeError:
            proc.wait()  # restic stopped reading: it failed, and says why
            for reader in readers:
                reader.join()
            raise _failure(f"restic backup to {self.repository}", _text(err)) from None
        except BaseException:
            proc.kill()
            proc.wait()
            raise
        with suppress(BrokenPipeError):
            proc.stdin.close()
        code = proc.wait()
        for reader in readers:
            reader.join()
        if code != 0:
            raise _failure(f"restic backup to {self.repository}", _text(err))
        for line in b"".join(out).decode(errors="replace").splitlines():
            message = json.loads(line) if line.startswith("{") else {}
            if message.get("message_type") == "summary":
                return Uploaded(
                    message["snapshot_id"],
                    int(message.get("total_bytes_processed", 0)),
                    int(message.get("data_added_packed", message.get("data_added", 0))),
                )
        raise OperationFailed(f"restic backup to {self.repository} printed no summary")

    @contextmanager
    def dump(self, snapshot_id: str, filename: str) -> Iterator[IO[bytes]]:
        """The file's bytes as stored. The reader must read to the end; a restic that fails
        (a missing or damaged pack) is an OperationFailed when the block ends."""
        proc = subprocess.Popen(
            self._argv("dump", snapshot_id, filename),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            env=self._env,
        )
        assert proc.stdout is not None and proc.stderr is not None
        err: list[bytes] = []
        reader = _drain(proc.stderr, err)
        try:
            yield proc.stdout
        except BaseException:
            proc.kill()
            raise
        finally:
            proc.stdout.close()
            code = proc.wait()
            reader.join()
        if code != 0:
            raise _failure(f"restic dump from {self.repository}", _text(err))

    def forget(self, snapshot_ids: Sequence[str], prune: bool = True) -> None:
        if snapshot_ids:
            self._run("forget", *(["--prune"] if prune else []), *snapshot_ids)

    def prune(self) -> None:
        self._run("prune")

    def unlock(self) -> None:
        """Removes the stale locks (of restic processes that died on this host, or older than
        30 minutes); a live lock stays."""
        self._run("unlock")

    def check(self, read_data: bool = False) -> None:
        self._run("check", *(["--read-data"] if read_data else []))

    def add_key(self, new_password_file: str) -> None:
        self._run("key", "add", "--new-password-file", new_password_file)

    def keys(self) -> list[dict[str, object]]:
        found: list[dict[str, object]] = json.loads(self._run("key", "list", "--json"))
        return found

    def remove_key(self, key_id: str) -> None:
        self._run("key", "remove", key_id)


def _drain(stream: IO[bytes], into: list[bytes]) -> threading.Thread:
    """A started thread reading `stream` to its end into `into` (a pipe left unread would
    block the process writing it)."""
    reader = threading.Thread(target=lambda: into.append(stream.read()), daemon=True)
    reader.start()
    return reader


def _text(output: list[bytes]) -> str:
    return b"".join(output).decode(errors="replace")


WRONG_KEY = "wrong password or no key found"
# What restic 0.14 says when a blob or pack is not what its index or its MAC says.
DAMAGE = ("ciphertext verification failed", "hash mismatch", "invalid data returned", "LoadBlob")
FULL = ("no space left on device", "QuotaExceeded", "disk quota exceeded")


def _failure(what: str, stderr: str) -> HostsnapError:
    reason = _reason(stderr)
    if WRONG_KEY in stderr:
        return Precondition(
            f"{what}: the target's key does not open its repository ({reason})",
            reason="TARGET_KEY_WRONG",
        )
    if LOCKED in stderr:
        return Unavailable(
            f"{what}: the repository is locked by another operation on it (a prune, a check); "
            f"retry later ({reason})",
            reason="TARGET_LOCKED",
        )
    if any(sign in stderr for sign in FULL):
        return Capacity(
            f"Insufficient Capacity: {what}: the target is full ({reason})",
            reason="INSUFFICIENT_CAPACITY",
        )
    if any(sign in stderr for sign in DAMAGE):
        return Damaged(f"{what}: stored data is damaged ({reason})")
    return OperationFailed(f"{what}: {reason}")


def _reason(stderr: str) -> str:
    """restic's own reason: its "Fatal:" line, else its last line."""
    lines = [line.strip() for line in stderr.splitlines() if line.strip()]
    fatal = [line for line in lines if line.startswith("Fatal:")]
    return (fatal or lines or ["failed without a message"])[-1]
