"""The metadata store's schema migrations (Alembic): ``versions/`` holds one revision per
schema change, ``env.py`` runs them. :func:`migrate` applies them when a store is opened
(`kafkaml_ray.store.runtime.Store` calls it with the tables).

A new migration, from the repository root (pyproject.toml's ``[tool.alembic]`` names this
folder)::

    alembic -x url=sqlite:////tmp/kml-schema.db upgrade head
    alembic -x url=sqlite:////tmp/kml-schema.db revision --autogenerate -m "what changed"
"""

from __future__ import annotations

import fcntl
import logging
import threading
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from typing import Any

from sqlalchemy import Connection, Integer, MetaData, inspect, text
from sqlalchemy.engine import Engine

from kafkaml_ray.errors import Unavailable

__all__ = ["migrate", "compare_type", "SCRIPT_LOCATION"]

logger = logging.getLogger(__name__)
#: where Alembic finds them (the same as pyproject.toml's ``[tool.alembic]``)
SCRIPT_LOCATION = "kafkaml_ray.store:migrations"


def compare_type(
    context: Any,
    inspected_column: Any,
    metadata_column: Any,
    inspected_type: Any,
    metadata_type: Any,
) -> bool | None:
    """Autogenerate's column type comparison, but INTEGER and BIGINT alike on SQLite: every
    SQLite integer is 64-bit, so revision 0002 widens the counters on PostgreSQL only."""
    if (
        context.dialect.name == "sqlite"
        and isinstance(inspected_type, Integer)
        and isinstance(metadata_type, Integer)
    ):
        return False
    return None  # Alembic's own comparison


_PG_MIGRATION_LOCK = 0x6B6D6C5F6D6967  # pg_advisory_xact_lock key: "kml_mig"
_ALEMBIC_LOCK = threading.Lock()  # Alembic's context and op are one per process


@contextmanager
def _migration_lock(engine: Engine) -> Iterator[Connection]:
    """A connection that alone migrates its database (other processes wait), committed when
    the block ends: a PostgreSQL advisory lock, or a lock file next to a SQLite file."""
    sqlite = engine.dialect.name == "sqlite"
    path = engine.url.database
    with ExitStack() as stack:
        stack.enter_context(_ALEMBIC_LOCK)
        if sqlite and path and path != ":memory:" and not path.startswith("file:"):
            lock = stack.enter_context(open(f"{path}.migration-lock", "a"))
            fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes, after conn's
        conn = stack.enter_context(engine.connect())
        if engine.dialect.name == "postgresql":
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _PG_MIGRATION_LOCK})
        raw = conn.connection.dbapi_connection
        previous = getattr(raw, "isolation_level", None)
        if sqlite:
            # SQLite alters a table by copying it and dropping the old one: with foreign keys
            # on, the drop of datasources would set deployments.datasource_id to NULL.
            conn.exec_driver_sql("PRAGMA foreign_keys=OFF")
            # One transaction for the whole upgrade, DDL included: pysqlite commits before
            # each DDL statement on its own, so an upgrade killed half-way left a database
            # no version of kafkaml-ray could open. Its transaction handling off, ours on.
            conn.commit()
            raw.isolation_level = None
            conn.exec_driver_sql("BEGIN IMMEDIATE")
        try:
            yield conn
            conn.commit()
        finally:
            if sqlite:
                conn.rollback()
                raw.isolation_level = previous
                conn.exec_driver_sql("PRAGMA foreign_keys=ON")


def migrate(engine: Engine, metadata: MetaData) -> None:
    """Bring the database to the newest schema (the Alembic revisions in
    ``kafkaml_ray/store/migrations/versions``). An empty one gets ``metadata``'s tables (today's
    models), stamped newest;
    one with the tables but no version was made by ``create_all`` before versions were kept:
    it is stamped ``0001`` (the oldest schema) and upgraded. A database newer than this code
    raises :class:`Unavailable`. At the newest revision already: one read, no lock."""
    # Imported here: Alembic loads every dialect (0.15 s); commands that open no store don't.
    from alembic import command
    from alembic.config import Config
    from alembic.migration import MigrationContext
    from alembic.script import ScriptDirectory

    config = Config()
    config.set_main_option("script_location", SCRIPT_LOCATION)
    script = ScriptDirectory.from_config(config)
    head = script.get_current_head()
    with engine.connect() as conn:
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
    with _migration_lock(engine) as conn:
        current = MigrationContext.configure(conn).get_current_revision()  # again, locked
        if current == head:
            return
        if current is not None and current not in {s.revision for s in script.walk_revisions()}:
            safe_url = engine.url.render_as_string(hide_password=True)
            raise Unavailable(
                f"the metadata store {safe_url} has schema revision {current!r}, newer than this "
                f"kafkaml-ray's (newest {head!r}): upgrade kafkaml-ray"
            )
        config.attributes["connection"] = conn
        if current is None and not set(inspect(conn).get_table_names()) & set(metadata.tables):
            metadata.create_all(conn)
            command.stamp(config, head)
            return
        if current is None:
            command.stamp(config, "0001")
        logger.info("metadata store: upgrading the schema from %s to %s", current or "0001", head)
        command.upgrade(config, head)
