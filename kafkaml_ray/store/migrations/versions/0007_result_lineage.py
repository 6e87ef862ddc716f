"""Result lineage: what a result came from, its tags and notes, and what it reproduces.

``results.lineage`` is a JSON record written when the run starts (the datasource, split,
code version, parameters) and completed when its weights are saved (their sha256, the
library versions); results stored before it have none, and their lineage is read from the
rows they link to. ``tags`` and ``notes`` are the user's; ``reproduction_of`` names the
result that a reproduction re-ran.

Revision ID: 0007
Revises: 0006
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0007"
down_revision = "0006"
branch_labels = None
depends_on = None


def upgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("lineage", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("tags", sa.JSON(), server_default="[]", nullable=False))
        batch_op.add_column(sa.Column("notes", sa.Text(), server_default="", nullable=False))
        batch_op.add_column(sa.Column("reproduction_of", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_results_reproduction_of", "results", ["reproduction_of"], ["id"],
            ondelete="SET NULL",
        )  # fmt: skip


def downgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_constraint("fk_results_reproduction_of", type_="foreignkey")
        batch_op.drop_column("reproduction_of")
        batch_op.drop_column("notes")
        batch_op.drop_column("tags")
        batch_op.drop_column("lineage")
