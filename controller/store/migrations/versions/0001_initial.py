"""The controller's first schema: lease, policies and their selectors, runs, jobs, intents.

Revision ID: 0001
Revises:
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0001"
down_revision: str | None = None
branch_labels: str | None = None
depends_on: str | None = None


def _times() -> list[sa.Column[int]]:
    return [
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("updated_at", sa.BigInteger, nullable=False),
    ]


def upgrade() -> None:
    op.create_table(
        "leases",
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("holder", sa.String(255), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=False),
        sa.Column("acquired_at", sa.BigInteger, nullable=False),
        sa.Column("renewed_at", sa.BigInteger, nullable=False),
        sa.Column("expires_at", sa.BigInteger, nullable=False),
        sa.PrimaryKeyConstraint("name", name="pk_leases"),
    )
    op.create_table(
        "policies",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("name", sa.String(255), nullable=False),
        sa.Column("enabled", sa.Boolean, nullable=False),
        sa.Column("schedule_kind", sa.String(16), nullable=False),
        sa.Column("interval_type", sa.String(16), nullable=True),
        sa.Column("schedule", sa.String(255), nullable=False),
        sa.Column("timezone", sa.String(64), nullable=False),
        sa.Column("max_snaps", sa.Integer, nullable=False),
        sa.Column("quiesce", sa.String(16), nullable=False),
        *_times(),
        sa.PrimaryKeyConstraint("id", name="pk_policies"),
        sa.UniqueConstraint("name", name="uq_policies_name"),
    )
    op.create_table(
        "policy_selectors",
        sa.Column("id", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("policy_id", sa.String(36), nullable=False),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("tag_key", sa.String(255), nullable=False),
        sa.Column("value", sa.String(255), nullable=False),
        sa.PrimaryKeyConstraint("id", name="pk_policy_selectors"),
        sa.ForeignKeyConstraint(
            ["policy_id"],
            ["policies.id"],
            name="fk_policy_selectors_policy_id_policies",
            ondelete="CASCADE",
        ),
        sa.UniqueConstraint(
            "policy_id",
            "kind",
            "tag_key",
            "value",
            name="uq_policy_selectors_policy_id_kind_tag_key_value",
        ),
    )
    op.create_index("ix_policy_selectors_kind_value", "policy_selectors", ["kind", "value"])
    op.create_table(
        "runs",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("policy_id", sa.String(36), nullable=False),
        sa.Column("scheduled_for", sa.BigInteger, nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("created_at", sa.BigInteger, nullable=False),
        sa.Column("finished_at", sa.BigInteger, nullable=True),
        sa.Column("error", sa.Text, nullable=True),
        sa.PrimaryKeyConstraint("id", name="pk_runs"),
        sa.ForeignKeyConstraint(["policy_id"], ["policies.id"], name="fk_runs_policy_id_policies"),
        sa.UniqueConstraint("policy_id", "scheduled_for", name="uq_runs_policy_id_scheduled_for"),
    )
    op.create_table(
        "jobs",
        sa.Column("seq", sa.Integer, autoincrement=True, nullable=False),
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("run_id", sa.String(36), nullable=True),
        sa.Column("kind", sa.String(16), nullable=False),
        sa.Column("host_id", sa.String(64), nullable=False),
        sa.Column("vm_id", sa.String(64), nullable=True),
        sa.Column("volume_id", sa.String(64), nullable=True),
        sa.Column("params", sa.Text, nullable=False),
        sa.Column("idempotency_key", sa.String(255), nullable=False),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("agent_job_id", sa.String(64), nullable=True),
        sa.Column("epoch", sa.BigInteger, nullable=True),
        sa.Column("attempts", sa.Integer, nullable=False),
        sa.Column("max_attempts", sa.Integer, nullable=False),
        sa.Column("not_before", sa.BigInteger, nullable=False),
        sa.Column("deadline", sa.BigInteger, nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        *_times(),
        sa.PrimaryKeyConstraint("seq", name="pk_jobs"),
        sa.UniqueConstraint("id", name="uq_jobs_id"),
        sa.ForeignKeyConstraint(["run_id"], ["runs.id"], name="fk_jobs_run_id_runs"),
        sa.UniqueConstraint("idempotency_key", name="uq_jobs_idempotency_key"),
    )
    op.create_index("ix_jobs_run_id", "jobs", ["run_id"])
    op.create_index("ix_jobs_state_not_before", "jobs", ["state", "not_before"])
    op.create_table(
        "intents",
        sa.Column("id", sa.String(36), nullable=False),
        sa.Column("job_id", sa.String(36), nullable=False),
        sa.Column("volume_id", sa.String(64), nullable=False),
        sa.Column("previous_path", sa.Text, nullable=True),
        sa.Column("new_path", sa.Text, nullable=True),
        sa.Column("state", sa.String(16), nullable=False),
        sa.Column("error", sa.Text, nullable=True),
        *_times(),
        sa.PrimaryKeyConstraint("id", name="pk_intents"),
        sa.ForeignKeyConstraint(["job_id"], ["jobs.id"], name="fk_intents_job_id_jobs"),
        sa.UniqueConstraint("job_id", "volume_id", name="uq_intents_job_id_volume_id"),
    )
    op.create_index("ix_intents_state", "intents", ["state"])


def downgrade() -> None:
    for table in ("intents", "jobs", "runs", "policy_selectors", "policies", "leases"):
        op.drop_table(table)
