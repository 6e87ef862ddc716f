"""Alembic's environment for the store's migrations. Alembic runs this file; importing it
only defines :func:`run`.

Run by the library (:func:`kafkaml_ray.store.migrations.migrate`, when a store opens), the
connection to migrate comes in ``config.attributes["connection"]``, inside the transaction
(and lock) of the caller. From the ``alembic`` command, the database is named with
``-x url=...``.
"""

from __future__ import annotations

from alembic import context
from alembic.util import CommandError
from sqlalchemy import Connection, create_engine, pool

from kafkaml_ray.store.migrations import compare_type
from kafkaml_ray.store.models import Base


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=Base.metadata,
        compare_type=compare_type,
        render_as_batch=True,  # SQLite alters a table by copying it: batch operations do
    )
    with context.begin_transaction():
        context.run_migrations()


def run() -> None:
    if context.is_offline_mode():
        raise CommandError("the store's migrations run on a database only (no --sql)")
    connection = context.config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    url = context.get_x_argument(as_dictionary=True).get("url")
    if not url:
        raise CommandError("name the database: alembic -x url=sqlite:////path/to/kml.db ...")
    with create_engine(url, poolclass=pool.NullPool).connect() as connection:
        _run(connection)


if hasattr(context, "config"):  # run by Alembic, not imported
    run()
