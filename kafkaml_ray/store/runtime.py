"""The metadata store at run time: one `Store` per database URL and process, which brings
its schema up to date when it opens (`kafkaml_ray.store.migrations`), on SQLite by default
or PostgreSQL by URL. Status changes are written by `kafkaml_ray.store.transitions`.

>>> from kafkaml_ray.store.models import MLModel
>>> store = Store("sqlite://")
>>> with store.session() as s:
...     s.add(MLModel(name="m", framework="pytorch", code="..."))
>>> with store.session() as s:
...     s.scalars(select(MLModel.name)).all()
['m']
"""

from __future__ import annotations

import json
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from sqlalchemy import (
    create_engine,
    event,
    select,
)
from sqlalchemy.exc import OperationalError
from sqlalchemy.orm import (
    Session,
    sessionmaker,
)

from kafkaml_ray.errors import Unavailable
from kafkaml_ray.store.migrations import migrate
from kafkaml_ray.store.models import Base

__all__ = ["Store", "select"]

logger = logging.getLogger(__name__)


def _sqlite_pragmas(dbapi_conn: Any, _record: Any) -> None:
    cur = dbapi_conn.cursor()
    cur.execute("PRAGMA busy_timeout=30000")  # several processes write: wait, don't fail
    # WAL: readers never block the writer. The file keeps the mode; while processes that open
    # a new file at once switch it together, the switch fails at once instead of waiting.
    for attempt in range(100):
        try:
            cur.execute("PRAGMA journal_mode=WAL")
            break
        except sqlite3.OperationalError:
            if attempt == 99:
                raise
            time.sleep(0.05)
    cur.execute("PRAGMA foreign_keys=ON")
    cur.close()


def _finite(obj: Any) -> Any:
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    if isinstance(obj, dict):
        return {k: _finite(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_finite(v) for v in obj]
    return obj


def _json_dumps(obj: Any) -> str:
    """JSON columns as PostgreSQL takes them: a NaN or infinite number (a diverged loss) is
    stored as null, on every database alike, instead of failing the write.

    >>> _json_dumps({"loss": float("nan"), "history": [1.5, float("inf")]})
    '{"loss": null, "history": [1.5, null]}'
    """
    return json.dumps(_finite(obj))


_STORES: dict[str, Store] = {}
_STORES_LOCK = threading.Lock()


class Store:
    """Connection to the metadata store; brings its schema up to date on first use."""

    def __init__(self, url: str):
        self.url = url
        kwargs: dict[str, Any] = {}
        if url.startswith("sqlite"):
            kwargs["connect_args"] = {"timeout": 30}
            if url.startswith("sqlite:///"):
                from pathlib import Path

                Path(url.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
        else:
            kwargs["pool_pre_ping"] = True
        self.engine = create_engine(url, json_serializer=_json_dumps, **kwargs)
        if url.startswith("sqlite"):
            event.listen(self.engine, "connect", _sqlite_pragmas)
        try:
            migrate(self.engine, Base.metadata)
        except OperationalError as e:
            raise Unavailable(f"cannot open the metadata store {self.safe_url}: {e.orig}") from None
        self._sessions = sessionmaker(self.engine, expire_on_commit=False)

    @classmethod
    def for_url(cls, url: str) -> Store:
        """This process's one Store for ``url``: one engine and connection pool, the tables
        checked once. Everything in the library opens the store this way."""
        with _STORES_LOCK:
            store = _STORES.get(url)
            if store is None:
                store = _STORES[url] = cls(url)
            return store

    @property
    def safe_url(self) -> str:
        """The URL without its password, for messages."""
        return self.engine.url.render_as_string(hide_password=True)

    @contextmanager
    def session(self) -> Iterator[Session]:
        """A transaction: committed when the block ends, rolled back on an error."""
        with self._sessions.begin() as s:
            yield s

    def dispose(self) -> None:
        self.engine.dispose()
