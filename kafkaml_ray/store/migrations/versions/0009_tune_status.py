"""A search's status is an enum column (`kafkaml_ray.statuses.TuneStatus`), stored like
every other status column: by the member's name (``RUNNING``), where the bare string column
held its value (``running``). The column stays a VARCHAR(20); the rows are rewritten.

Revision ID: 0009
Revises: 0008
Create Date: 2026-12-07
"""

from __future__ import annotations

from alembic import op

revision = "0009"
down_revision = "0008"
branch_labels = None
depends_on = None


def upgrade() -> None:
    op.execute("UPDATE tune_runs SET status = UPPER(status)")


def downgrade() -> None:
    op.execute("UPDATE tune_runs SET status = LOWER(status)")
