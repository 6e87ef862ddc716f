"""64-bit counters; a datasource's source also names the Kafka cluster and topic id.

Offsets and message counts outgrow 32 bits: the columns that hold them become BIGINT on
PostgreSQL (every SQLite INTEGER is 64-bit already). A control message is stored once per
(cluster id, topic id, topic, partition, offset): the same offsets read again from another
cluster, or from a control topic deleted and made again, are other messages. Rows stored
before keep "" in both new columns.

Safe on a database made by create_all after the counters became BIGINT (stamped 0001 too):
altering a BIGINT column to BIGINT changes nothing.

Revision ID: 0002
Revises: 0001
Create Date: 2026-12-05
"""

from __future__ import annotations

import sqlalchemy as sa
from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

COUNTERS = {
    "datasources": ("source_offset", "total_msg", "malformed_count"),
    "replica_stats": ("consumed", "predicted", "dead_letters", "lag"),
}
OLD_SOURCE = ("source_topic", "source_partition", "source_offset")
NEW_SOURCE = ("source_cluster", "source_topic_id", *OLD_SOURCE)
# The old unique constraint was made unnamed: PostgreSQL named it <table>_<columns>_key.
# On SQLite, batch mode copies the table from its reflection, which names it by the same
# convention, so that one name drops it on both.
OLD_UNIQUE = "datasources_source_topic_source_partition_source_offset_key"
NAMING = {"uq": "%(table_name)s_%(column_0_N_name)s_key"}


def _counters(type_: sa.types.TypeEngine, existing: sa.types.TypeEngine) -> None:
    if op.get_bind().dialect.name == "sqlite":
        return
    for table, columns in COUNTERS.items():
        for column in columns:
            op.alter_column(
                table, column, type_=type_, existing_type=existing, existing_nullable=False
            )


def upgrade() -> None:
    _counters(sa.BigInteger(), sa.Integer())
    with op.batch_alter_table("datasources", naming_convention=NAMING) as batch:
        for column in ("source_cluster", "source_topic_id"):
            batch.add_column(
                sa.Column(column, sa.String(length=64), nullable=False, server_default="")
            )
        batch.drop_constraint(OLD_UNIQUE, type_="unique")
        batch.create_unique_constraint("uq_datasources_source", list(NEW_SOURCE))


def downgrade() -> None:
    # Fails if two datasources differ only by cluster or topic id, or a counter holds more
    # than 32 bits.
    with op.batch_alter_table("datasources", naming_convention=NAMING) as batch:
        batch.drop_constraint("uq_datasources_source", type_="unique")
        batch.create_unique_constraint(OLD_UNIQUE, list(OLD_SOURCE))
        batch.drop_column("source_topic_id")
        batch.drop_column("source_cluster")
    _counters(sa.Integer(), sa.BigInteger())
