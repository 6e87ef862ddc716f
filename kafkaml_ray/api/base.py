"""What every service of the API shares: the client it serves (its settings and store),
the check before starting work on Ray, finding rows by id or name, and waiting for
something to be done."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, TypeVar

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kafkaml_ray.errors import Conflict, InvalidInput, NotFound
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import Inference, Store

__all__ = [
    "Service",
    "Ref",
    "checked_name",
    "find",
    "get_row",
    "flush",
    "refuse_if_served",
    "wait_done",
]

Ref = int | str  # an id, or a name
T = TypeVar("T")


class Service:
    """One resource's part of the API (`kafkaml_ray.client.Client` holds one of each)."""

    def __init__(self, client: Any):
        #: the `kafkaml_ray.client.Client` holding this service (its settings and store,
        #: and the other services: a reproduction re-sends a datasource)
        self.client = client

    @property
    def settings(self) -> Settings:
        return self.client.settings

    @property
    def store(self) -> Store:
        return self.client.store

    def _check_cluster(self) -> None:
        """Before starting work: refuse a Ray cluster of several nodes with a SQLite store or
        local artifacts (`~kafkaml_ray._private.rayutil.check_shared_state`)."""
        from kafkaml_ray._private.rayutil import check_shared_state

        check_shared_state(self.settings)


def wait_done(get: Callable[[], T], what: str, timeout: float, every: float = 1.0) -> T:
    """Call ``get`` until what it returns is ``done``; TimeoutError after ``timeout``.

    >>> class Job:
    ...     done = True
    >>> wait_done(Job, "job 1", timeout=1).done
    True
    """
    deadline = time.monotonic() + timeout
    while True:
        found: Any = get()
        if found.done:
            return found
        if time.monotonic() > deadline:
            raise TimeoutError(f"{what} is not done after {timeout:.0f}s")
        time.sleep(every)


def checked_name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput(f"a {what} name must have 1 to 200 characters")
    if name.isdigit():
        raise InvalidInput(f"a {what} name cannot be a number (numbers are ids): {name!r}")
    return name


def find(s, table, ref: Ref, what: str):
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        row = s.get(table, int(ref))
    else:
        row = s.scalar(select(table).where(table.name == ref))
    if row is None:
        raise NotFound(f"no {what} with id or name {ref!r}")
    return row


def get_row(s, table, key: int, what: str):
    row = s.get(table, int(key)) if str(key).isdigit() else None
    if row is None:
        raise NotFound(f"no {what} with id {key!r}")
    return row


def flush(s, duplicate: str) -> None:
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(duplicate) from None


def refuse_if_served(s, result_ids: list[int]) -> None:
    served = s.scalars(select(Inference).where(Inference.result_id.in_(result_ids))).first()
    if served is not None:
        raise Conflict(
            f"result {served.result_id} is served by inference {served.id}: delete it first"
        )
