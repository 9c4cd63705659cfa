"""Policies may back their snapshots up: the agents' backup target, and how many backups of
each volume to keep there.

Revision ID: 0002
Revises: 0001
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision: str | None = "0001"
branch_labels: str | None = None
depends_on: str | None = None

COLUMNS = (
    ("backup_target", sa.String(64)),
    ("keep_backups", sa.Integer()),
)


def _present() -> set[str]:
    return {c["name"] for c in sa.inspect(op.get_bind()).get_columns("policies")}


def upgrade() -> None:
    # MariaDB commits each ALTER on its own: a run that died midway is finished by the next.
    present = _present()
    for name, kind in COLUMNS:
        if name not in present:
            op.add_column("policies", sa.Column(name, kind, nullable=True))


def downgrade() -> None:
    present = _present()
    with op.batch_alter_table("policies") as batch:
        for name, _ in reversed(COLUMNS):
            if name in present:
                batch.drop_column(name)
