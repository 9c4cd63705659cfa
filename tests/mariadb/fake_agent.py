"""A stand-in for the agents' side of dispatch: like the real agent, a request with an
idempotency key it has seen returns the job it made then. Kept in a SQLite file so controller
processes share it; every send is counted, so tests can tell a resend from a second job."""

from __future__ import annotations

import contextlib
import sqlite3
import uuid
from collections import Counter
from pathlib import Path


class FakeAgent:
    def __init__(self, path: Path) -> None:
        self.path = path
        with contextlib.closing(self._connect()) as conn:
            conn.execute("CREATE TABLE IF NOT EXISTS jobs (key TEXT PRIMARY KEY, id TEXT)")
            conn.execute("CREATE TABLE IF NOT EXISTS sends (key TEXT, sender TEXT)")

    def _connect(self) -> sqlite3.Connection:
        return sqlite3.connect(self.path, timeout=30, isolation_level=None)

    def submit(self, idempotency_key: str, sender: str) -> str:
        """The agent job for this key: made now if the key is new."""
        conn = self._connect()
        try:
            conn.execute("BEGIN IMMEDIATE")
            conn.execute("INSERT INTO sends VALUES (?, ?)", (idempotency_key, sender))
            conn.execute(
                "INSERT OR IGNORE INTO jobs VALUES (?, ?)", (idempotency_key, uuid.uuid4().hex)
            )
            (job_id,) = conn.execute(
                "SELECT id FROM jobs WHERE key = ?", (idempotency_key,)
            ).fetchone()
            conn.execute("COMMIT")
            return str(job_id)
        finally:
            conn.close()

    def jobs(self) -> dict[str, str]:
        """Agent job id by idempotency key: one entry per job the agent made."""
        with contextlib.closing(self._connect()) as conn:
            return dict(conn.execute("SELECT key, id FROM jobs").fetchall())

    def sends(self) -> list[tuple[str, str]]:
        """(idempotency key, sender) of every request, in order."""
        with contextlib.closing(self._connect()) as conn:
            return [(k, s) for k, s in conn.execute("SELECT key, sender FROM sends ORDER BY rowid")]

    def sends_per_key(self) -> Counter[str]:
        return Counter(key for key, _ in self.sends())
