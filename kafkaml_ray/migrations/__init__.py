"""The metadata store's schema migrations (Alembic): ``versions/`` holds one revision per
schema change, ``env.py`` runs them. :func:`kafkaml_ray.store.migrate` applies them when a
store is opened; nothing here is imported by the library itself.

A new migration, from the repository root (pyproject.toml's ``[tool.alembic]`` names this
folder)::

    alembic -x url=sqlite:////tmp/kml-schema.db upgrade head
    alembic -x url=sqlite:////tmp/kml-schema.db revision --autogenerate -m "what changed"
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import Integer

__all__ = ["compare_type"]


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
