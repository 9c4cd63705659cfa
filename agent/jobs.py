"""The durable job journal (SQLite, WAL): jobs, their steps, idempotency keys, and the
snapshots and image layers the agent made. Each step is written before its side effect, so a
restarted agent knows where every interrupted job stood."""

from __future__ import annotations

import enum
import json
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agent.errors import InvalidArgument

SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    id TEXT PRIMARY KEY,
    operation TEXT NOT NULL,
    state TEXT NOT NULL,
    idempotency_key TEXT UNIQUE,
    domain TEXT NOT NULL,
    request TEXT NOT NULL,
    result TEXT,
    error TEXT,
    error_reason TEXT,
    error_type TEXT,
    created REAL NOT NULL,
    updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS steps (
    job_id TEXT NOT NULL REFERENCES jobs(id),
    seq INTEGER NOT NULL,
    name TEXT NOT NULL,
    detail TEXT NOT NULL,
    at REAL NOT NULL,
    PRIMARY KEY (job_id, seq)
);
CREATE TABLE IF NOT EXISTS snapshots (
    id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    domain TEXT NOT NULL,
    target TEXT NOT NULL,
    kind TEXT NOT NULL,
    content TEXT NOT NULL,
    overlay TEXT,
    consistency TEXT NOT NULL,
    created REAL NOT NULL,
    job_id TEXT NOT NULL,
    deleted REAL
);
CREATE TABLE IF NOT EXISTS layers (
    path TEXT PRIMARY KEY,
    domain TEXT NOT NULL,
    target TEXT NOT NULL,
    active INTEGER NOT NULL
);
-- The metrics read the succeeded jobs of one operation at each scrape.
CREATE INDEX IF NOT EXISTS jobs_by_operation ON jobs (operation, state);
"""

# Failures after which the same idempotency key starts a new job (nothing had changed, or it
# was undone): refused admission, or cancelled without its requester asking (the caller went
# away before it learned the job's id; the agent was stopping).
RETRYABLE_REASONS = ("ADMISSION_TIMEOUT", "CALLER_GONE", "AGENT_STOPPING")

# Columns added after the first release, with their type: added to older journals on open.
ADDED_COLUMNS = {"jobs": {"error_type": "TEXT", "progress": "REAL"}}

LEFT_FROZEN = """
SELECT id FROM jobs j
WHERE (state = ? OR error_reason = 'GUEST_STILL_FROZEN')
  AND EXISTS (SELECT 1 FROM steps s WHERE s.job_id = j.id AND s.name = 'freeze')
  AND NOT EXISTS (SELECT 1 FROM steps s WHERE s.job_id = j.id AND s.name = 'thawed')
"""


class JobState(enum.StrEnum):
    RUNNING = "running"
    SUCCEEDED = "succeeded"
    FAILED = "failed"
    CANCELLED = "cancelled"  # stopped at a safe point before it changed anything more


@dataclass(frozen=True)
class Step:
    name: str
    detail: dict[str, Any]
    at: float


@dataclass(frozen=True)
class Job:
    id: str
    operation: str
    state: JobState
    domain: str
    idempotency_key: str | None
    request: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    error_reason: str | None
    error_type: str | None
    created: float
    updated: float
    steps: tuple[Step, ...] = field(default_factory=tuple)
    progress: float = 0.0  # of a long step (a merge, a flatten), 0 to 1

    def step(self, name: str) -> Step | None:
        """The last step of that name, if the job reached it."""
        return next((s for s in reversed(self.steps) if s.name == name), None)


@dataclass(frozen=True)
class SnapshotRecord:
    id: str
    name: str
    domain: str
    target: str
    kind: str
    content: str
    overlay: str | None
    consistency: str
    created: float
    job_id: str
    deleted: float | None


class Journal:
    def __init__(self, path: Path, clock: Callable[[], float] = time.time) -> None:
        path.parent.mkdir(parents=True, exist_ok=True)
        self._db = sqlite3.connect(path, check_same_thread=False, isolation_level=None)
        self._db.row_factory = sqlite3.Row
        self._db.execute("PRAGMA journal_mode=WAL")
        # FULL: a step must survive a power loss, not only a crash of the agent.
        self._db.execute("PRAGMA synchronous=FULL")
        self._db.executescript(SCHEMA)
        self._add_missing_columns()
        self._lock = threading.Lock()
        self._clock = clock
        # Told the job id after each change of a job, from the thread that made it.
        self.listeners: list[Callable[[str], None]] = []

    def _add_missing_columns(self) -> None:
        for table, columns in ADDED_COLUMNS.items():
            present = {row[1] for row in self._db.execute(f"PRAGMA table_info({table})")}
            for name, kind in columns.items():
                if name not in present:
                    self._db.execute(f"ALTER TABLE {table} ADD COLUMN {name} {kind}")

    def close(self) -> None:
        self._db.close()

    @contextmanager
    def _tx(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # jobs

    def by_key(self, idempotency_key: str, operation: str, domain: str) -> Job | None:
        """The job an earlier request with this idempotency key started; None when there is
        none or the key may be used again (its job was refused before changing anything).
        InvalidArgument when the key was used for another operation or domain."""
        with self._lock:
            row = self._db.execute(
                "SELECT id, operation, domain, error_reason FROM jobs WHERE idempotency_key = ?",
                (idempotency_key,),
            ).fetchone()
        if row is None or row["error_reason"] in RETRYABLE_REASONS:
            return None
        _same_use(idempotency_key, row, operation, domain)
        return self.get(row["id"])

    def start(
        self,
        job_id: str,
        operation: str,
        domain: str,
        request: dict[str, Any],
        idempotency_key: str | None,
    ) -> tuple[Job, bool]:
        """A new running job, or the existing job of the same idempotency key (with False)."""
        with self._tx() as db:
            if idempotency_key is not None:
                row = db.execute(
                    "SELECT id, operation, domain, error_reason FROM jobs "
                    "WHERE idempotency_key = ?",
                    (idempotency_key,),
                ).fetchone()
                if row is not None and row["error_reason"] in RETRYABLE_REASONS:
                    # Refused before it changed anything: the key may be used again.
                    db.execute("UPDATE jobs SET idempotency_key = NULL WHERE id = ?", (row["id"],))
                    row = None
                if row is not None:
                    _same_use(idempotency_key, row, operation, domain)
                    existing = row["id"]
                    created = False
                else:
                    existing = None
            else:
                existing = None
            if existing is None:
                existing = job_id
                now = self._clock()
                db.execute(
                    "INSERT INTO jobs (id, operation, state, idempotency_key, domain, request, "
                    "created, updated) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    (
                        existing,
                        operation,
                        JobState.RUNNING,
                        idempotency_key,
                        domain,
                        json.dumps(request),
                        now,
                        now,
                    ),
                )
                created = True
        return self.get(existing), created

    def _changed(self, job_id: str) -> None:
        for listener in self.listeners:
            listener(job_id)

    def record(self, job_id: str, step: str, /, **detail: Any) -> None:
        """Writes a step: an intent before its side effect, or a completion after it (each
        job kind's step enum says which; agent/steps.py)."""
        with self._tx() as db:
            seq = db.execute(
                "SELECT COALESCE(MAX(seq), 0) + 1 FROM steps WHERE job_id = ?", (job_id,)
            ).fetchone()[0]
            db.execute(
                "INSERT INTO steps VALUES (?, ?, ?, ?, ?)",
                (job_id, seq, step, json.dumps(detail), self._clock()),
            )
            db.execute("UPDATE jobs SET updated = ? WHERE id = ?", (self._clock(), job_id))
        self._changed(job_id)

    def set_progress(self, job_id: str, fraction: float) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET progress = ?, updated = ? WHERE id = ?",
                (fraction, self._clock(), job_id),
            )
        self._changed(job_id)

    def succeed(self, job_id: str, result: dict[str, Any]) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, result = ?, updated = ? WHERE id = ?",
                (JobState.SUCCEEDED, json.dumps(result), self._clock(), job_id),
            )
        self._changed(job_id)

    def fail(
        self,
        job_id: str,
        error: str,
        reason: str,
        error_type: str = "OperationFailed",
        state: JobState = JobState.FAILED,
    ) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE jobs SET state = ?, error = ?, error_reason = ?, error_type = ?, "
                "updated = ? WHERE id = ?",
                (state, error, reason, error_type, self._clock(), job_id),
            )
        self._changed(job_id)

    def get(self, job_id: str) -> Job:
        with self._lock:
            row = self._db.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone()
            if row is None:
                raise KeyError(job_id)
            steps = self._db.execute(
                "SELECT name, detail, at FROM steps WHERE job_id = ? ORDER BY seq", (job_id,)
            ).fetchall()
        return Job(
            id=row["id"],
            operation=row["operation"],
            state=JobState(row["state"]),
            domain=row["domain"],
            idempotency_key=row["idempotency_key"],
            request=json.loads(row["request"]),
            result=json.loads(row["result"]) if row["result"] else None,
            error=row["error"],
            error_reason=row["error_reason"],
            error_type=row["error_type"],
            created=row["created"],
            updated=row["updated"],
            steps=tuple(Step(s["name"], json.loads(s["detail"]), s["at"]) for s in steps),
            progress=row["progress"] or 0.0,
        )

    def jobs_left_frozen(self) -> list[Job]:
        """Jobs that froze a guest and did not record the thaw: interrupted ones, and failed
        ones whose thaw could not be confirmed."""
        with self._lock:
            ids = [r[0] for r in self._db.execute(LEFT_FROZEN, (JobState.RUNNING,))]
        return [self.get(i) for i in ids]

    def jobs(self, state: JobState | None = None) -> list[Job]:
        with self._lock:
            query = (
                "SELECT id FROM jobs" + (" WHERE state = ?" if state else "") + " ORDER BY created"
            )
            ids = [r[0] for r in self._db.execute(query, (state,) if state else ())]
        return [self.get(i) for i in ids]

    def succeeded_results(self, operation: str) -> list[dict[str, Any]]:
        """The results of the operation's succeeded jobs, oldest first (one query: read at
        each metrics scrape)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT result FROM jobs WHERE operation = ? AND state = ? ORDER BY created",
                (operation, JobState.SUCCEEDED),
            ).fetchall()
        return [json.loads(r[0]) for r in rows if r[0]]

    # snapshots

    def add_snapshot(self, record: SnapshotRecord) -> None:
        with self._tx() as db:
            db.execute(
                "INSERT OR REPLACE INTO snapshots VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (
                    record.id,
                    record.name,
                    record.domain,
                    record.target,
                    record.kind,
                    record.content,
                    record.overlay,
                    record.consistency,
                    record.created,
                    record.job_id,
                    record.deleted,
                ),
            )

    def snapshot(self, snapshot_id: str, *, deleted: bool = False) -> SnapshotRecord | None:
        """The snapshot's record; a deleted one only when asked for."""
        with self._lock:
            row = self._db.execute(
                "SELECT * FROM snapshots WHERE id = ? AND (? OR deleted IS NULL)",
                (snapshot_id, deleted),
            ).fetchone()
        return SnapshotRecord(**dict(row)) if row else None

    def snapshots(self, domain: str, target: str | None = None) -> list[SnapshotRecord]:
        with self._lock:
            rows = self._db.execute(
                "SELECT * FROM snapshots WHERE domain = ? AND (? IS NULL OR target = ?) "
                "AND deleted IS NULL ORDER BY created",
                (domain, target, target),
            ).fetchall()
        return [SnapshotRecord(**dict(r)) for r in rows]

    def mark_snapshot_deleted(self, snapshot_id: str) -> None:
        with self._tx() as db:
            db.execute(
                "UPDATE snapshots SET deleted = ? WHERE id = ?", (self._clock(), snapshot_id)
            )

    def move_snapshot_content(self, old: str, new: str) -> None:
        """After a merge, the snapshots whose content was `old` now read it from `new`."""
        with self._tx() as db:
            db.execute(
                "UPDATE snapshots SET content = ? WHERE content = ? AND deleted IS NULL", (new, old)
            )

    # layers of file volumes: which image is active, which are stale

    def set_active_layer(self, domain: str, target: str, active: str, known: list[str]) -> None:
        with self._tx() as db:
            for path in [*known, active]:
                db.execute(
                    "INSERT OR REPLACE INTO layers VALUES (?, ?, ?, ?)",
                    (path, domain, target, int(path == active)),
                )
            db.execute(
                "UPDATE layers SET active = 0 WHERE domain = ? AND target = ? AND path != ?",
                (domain, target, active),
            )

    def forget_layer(self, path: str) -> None:
        with self._tx() as db:
            db.execute("DELETE FROM layers WHERE path = ?", (path,))

    def stale_layers(self) -> dict[str, dict[str, str]]:
        """Every known layer that is no longer active: path -> {domain, target, active}."""
        with self._lock:
            rows = self._db.execute(
                "SELECT s.path, s.domain, s.target, a.path AS active FROM layers s "
                "JOIN layers a ON a.domain = s.domain AND a.target = s.target AND a.active = 1 "
                "WHERE s.active = 0"
            ).fetchall()
        return {
            r["path"]: {"domain": r["domain"], "target": r["target"], "active": r["active"]}
            for r in rows
        }


def _same_use(idempotency_key: str, row: sqlite3.Row, operation: str, domain: str) -> None:
    if (row["operation"], row["domain"]) != (operation, domain):
        raise InvalidArgument(
            f"idempotency key {idempotency_key!r} was used by job {row['id']} "
            f"({row['operation']} of {row['domain']}); use a new key",
            reason="IDEMPOTENCY_KEY_REUSED",
        )
