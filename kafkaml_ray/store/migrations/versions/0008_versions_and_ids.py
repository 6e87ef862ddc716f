"""Ids are never reused; a model has one version of each number, and a version keeps the
input and output shapes of its code; a model and a version record the names of the metrics
they report (an online deployment's ``monitoring_metric`` is checked against them); an
inference may deliver exactly once (``inferences.exactly_once``).

On SQLite a row's id was the largest id in its table plus one, so deleting the newest
result (or deployment, or search) gave its id to the next one: a training task still
running for the deleted result could then write onto the new one, and actor names made of
the id could name the wrong run. With AUTOINCREMENT SQLite never hands out an id twice
(PostgreSQL's sequences never did). A model's version numbers are unique: two updates at
once made two "version N+1"; any such twin is renumbered after the newest first. A
version's shapes are what a trained result is loaded with (the model's own shapes follow its
newest code); versions stored before take their model's.

Revision ID: 0008
Revises: 0007
Create Date: 2026-12-07
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0008"
down_revision = "0007"
branch_labels = None
depends_on = None

_TABLES = ("deployments", "results", "tune_runs")


def upgrade() -> None:
    conn = op.get_bind()
    if conn.dialect.name == "sqlite":
        for table in _TABLES:
            with op.batch_alter_table(
                table, recreate="always", table_kwargs={"sqlite_autoincrement": True}
            ):
                pass
    rows = conn.execute(
        sa.text("SELECT id, model_id, number FROM model_versions ORDER BY model_id, number, id")
    ).all()
    newest: dict[int, int] = {}
    seen: set[tuple[int, int]] = set()
    for _, model_id, number in rows:
        newest[model_id] = max(newest.get(model_id, 0), number)
    for row_id, model_id, number in rows:
        if (model_id, number) in seen:
            newest[model_id] += 1
            conn.execute(
                sa.text("UPDATE model_versions SET number = :n WHERE id = :id"),
                {"n": newest[model_id], "id": row_id},
            )
        seen.add((model_id, number))
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.create_unique_constraint("uq_model_versions_number", ["model_id", "number"])
        batch_op.add_column(sa.Column("input_shape", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("output_shape", sa.JSON(), nullable=True))
        batch_op.add_column(sa.Column("metrics", sa.JSON(), nullable=True))
    with op.batch_alter_table("models") as batch_op:
        batch_op.add_column(sa.Column("metrics", sa.JSON(), nullable=True))
    with op.batch_alter_table("inferences") as batch_op:
        batch_op.add_column(
            sa.Column("exactly_once", sa.Boolean(), server_default="0", nullable=False)
        )
    conn.execute(
        sa.text(
            "UPDATE model_versions SET "
            "input_shape = (SELECT input_shape FROM models WHERE models.id = model_id), "
            "output_shape = (SELECT output_shape FROM models WHERE models.id = model_id)"
        )
    )


def downgrade() -> None:
    with op.batch_alter_table("inferences") as batch_op:
        batch_op.drop_column("exactly_once")
    with op.batch_alter_table("models") as batch_op:
        batch_op.drop_column("metrics")
    with op.batch_alter_table("model_versions") as batch_op:
        batch_op.drop_column("metrics")
        batch_op.drop_column("output_shape")
        batch_op.drop_column("input_shape")
        batch_op.drop_constraint("uq_model_versions_number", type_="unique")
    if op.get_bind().dialect.name == "sqlite":
        for table in _TABLES:
            with op.batch_alter_table(table, recreate="always"):
                pass
