"""Model code versions: a result keeps the code it trained with.

Each distinct code (with its imports) of a model is a row of ``model_versions``, numbered
per model; a result names its version. Existing models get version 1 with their current
code, and their existing results point at it: that is the best that can be known of what
they trained with, as the code before this revision was overwritten in place.

Revision ID: 0006
Revises: 0005
Create Date: 2026-12-05
"""

from __future__ import annotations

import hashlib
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

revision = "0006"
down_revision = "0005"
branch_labels = None
depends_on = None


def upgrade() -> None:
    versions = op.create_table(
        "model_versions",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("model_id", sa.Integer(), nullable=False),
        sa.Column("number", sa.Integer(), nullable=False),
        sa.Column("sha256", sa.String(length=64), nullable=False),
        sa.Column("imports", sa.Text(), nullable=False),
        sa.Column("code", sa.Text(), nullable=False),
        sa.Column("created_at", sa.DateTime(), nullable=False),
        sa.ForeignKeyConstraint(["model_id"], ["models.id"], ondelete="CASCADE"),
        sa.PrimaryKeyConstraint("id"),
        sa.UniqueConstraint("model_id", "sha256", name="uq_model_versions_code"),
    )
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.add_column(sa.Column("model_version_id", sa.Integer(), nullable=True))
        batch_op.create_foreign_key(
            "fk_results_model_version_id", "model_versions", ["model_version_id"], ["id"]
        )
    bind = op.get_bind()
    models = bind.execute(sa.text("SELECT id, code, imports FROM models")).fetchall()
    now = datetime.now(UTC).replace(tzinfo=None)
    for model_id, code, imports in models:
        sha = hashlib.sha256(f"{imports or ''}\0{code}".encode()).hexdigest()
        op.bulk_insert(
            versions,
            [
                {
                    "model_id": model_id, "number": 1, "sha256": sha,
                    "imports": imports or "", "code": code, "created_at": now,
                }
            ],
        )  # fmt: skip
    bind.execute(
        sa.text(
            "UPDATE results SET model_version_id = (SELECT v.id FROM model_versions v "
            "WHERE v.model_id = results.model_id)"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("results", schema=None) as batch_op:
        batch_op.drop_constraint("fk_results_model_version_id", type_="foreignkey")
        batch_op.drop_column("model_version_id")
    op.drop_table("model_versions")
