"""The controller's tables (SQLAlchemy Core). Migrations create exactly this; a test compares
the migrated database with it.

Times are BIGINT milliseconds since the epoch by the database's clock (`clock.py`). Enumerated
values are short strings checked by the code, not native ENUMs, so adding a state needs no
ALTER TABLE on MariaDB and no table rebuild on SQLite.
"""

from __future__ import annotations

import sqlalchemy as sa

ID = 36  # our own ids: uuid4 text
CS_ID = 64  # CloudStack's ids (uuids) and agent job ids
NAME = 255
STATE = 16

metadata = sa.MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)


def _times() -> list[sa.Column[int]]:
    return [
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    ]


leases = sa.Table(
    "leases",
    metadata,
    sa.Column("name", sa.String(NAME), primary_key=True),
    sa.Column("holder", sa.String(NAME), nullable=True),  # NULL once released
    sa.Column("epoch", sa.BigInteger, nullable=False),  # +1 on every acquisition, never reused
    sa.Column("acquired_at", sa.BigInteger, nullable=False),
    sa.Column("renewed_at", sa.BigInteger, nullable=False),
    sa.Column("expires_at", sa.BigInteger, nullable=False),
)

policies = sa.Table(
    "policies",
    metadata,
    sa.Column("id", sa.String(ID), primary_key=True),
    sa.Column("name", sa.String(NAME), nullable=False, unique=True),
    sa.Column("enabled", sa.Boolean, nullable=False),
    sa.Column("schedule_kind", sa.String(STATE), nullable=False),  # interval | cron
    sa.Column("interval_type", sa.String(STATE), nullable=True),  # HOURLY ... for interval
    sa.Column("schedule", sa.String(NAME), nullable=False),  # MM[:HH[:DD]] or cron fields
    sa.Column("timezone", sa.String(64), nullable=False),
    sa.Column("max_snaps", sa.Integer, nullable=False),
    sa.Column("quiesce", sa.String(STATE), nullable=False),
    *_times(),
    # 0002: backups (NULL: none)
    sa.Column("backup_target", sa.String(64), nullable=True),
    sa.Column("keep_backups", sa.Integer, nullable=True),
)

policy_selectors = sa.Table(
    "policy_selectors",
    metadata,
    sa.Column("id", sa.Integer, primary_key=True, autoincrement=True),
    sa.Column(
        "policy_id",
        sa.String(ID),
        sa.ForeignKey("policies.id", ondelete="CASCADE"),
        nullable=False,
    ),
    sa.Column("kind", sa.String(STATE), nullable=False),  # vm | volume | tag | account
    sa.Column("tag_key", sa.String(NAME), nullable=False),  # "" unless kind is tag
    sa.Column("value", sa.String(NAME), nullable=False),
    sa.UniqueConstraint("policy_id", "kind", "tag_key", "value"),
    sa.Index(None, "kind", "value"),
)

runs = sa.Table(
    "runs",
    metadata,
    sa.Column("id", sa.String(ID), primary_key=True),
    sa.Column("policy_id", sa.String(ID), sa.ForeignKey("policies.id"), nullable=False),
    sa.Column("scheduled_for", sa.BigInteger, nullable=False),
    sa.Column("state", sa.String(STATE), nullable=False),
    sa.Column("created_at", sa.BigInteger, nullable=False),
    sa.Column("finished_at", sa.BigInteger, nullable=True),
    sa.Column("error", sa.Text, nullable=True),
    sa.UniqueConstraint("policy_id", "scheduled_for"),  # one run per slot, whoever asks
)

jobs = sa.Table(
    "jobs",
    metadata,
    sa.Column("seq", sa.Integer, primary_key=True, autoincrement=True),  # creation order
    sa.Column("id", sa.String(ID), nullable=False, unique=True),
    sa.Column("run_id", sa.String(ID), sa.ForeignKey("runs.id"), nullable=True, index=True),
    sa.Column("kind", sa.String(STATE), nullable=False),
    sa.Column("host_id", sa.String(CS_ID), nullable=False),
    sa.Column("vm_id", sa.String(CS_ID), nullable=True),
    sa.Column("volume_id", sa.String(CS_ID), nullable=True),
    sa.Column("params", sa.Text, nullable=False),  # JSON object of strings
    sa.Column("idempotency_key", sa.String(NAME), nullable=False, unique=True),
    sa.Column("state", sa.String(STATE), nullable=False),
    sa.Column("agent_job_id", sa.String(CS_ID), nullable=True),
    sa.Column("epoch", sa.BigInteger, nullable=True),  # leader epoch of the last claim
    sa.Column("attempts", sa.Integer, nullable=False),
    sa.Column("max_attempts", sa.Integer, nullable=False),
    sa.Column("not_before", sa.BigInteger, nullable=False),
    sa.Column("deadline", sa.BigInteger, nullable=False),
    sa.Column("error", sa.Text, nullable=True),
    *_times(),
    sa.Index(None, "state", "not_before"),
)

intents = sa.Table(
    "intents",
    metadata,
    sa.Column("id", sa.String(ID), primary_key=True),
    sa.Column("job_id", sa.String(ID), sa.ForeignKey("jobs.id"), nullable=False),
    sa.Column("volume_id", sa.String(CS_ID), nullable=False),
    sa.Column("previous_path", sa.Text, nullable=True),
    sa.Column("new_path", sa.Text, nullable=True),
    sa.Column("state", sa.String(STATE), nullable=False, index=True),
    sa.Column("error", sa.Text, nullable=True),
    *_times(),
    sa.UniqueConstraint("job_id", "volume_id"),
)
