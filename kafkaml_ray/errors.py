"""Errors that reach users: one line each, no traceback needed."""

from __future__ import annotations

from sqlalchemy.exc import DBAPIError, IntegrityError

__all__ = [
    "KafkaMLError",
    "NotFound",
    "Conflict",
    "InvalidInput",
    "ModelCodeError",
    "Unavailable",
    "RunStopped",
    "store_error_text",
]


class KafkaMLError(Exception):
    """Base of every error kafkaml-ray raises on purpose; its message is for the user."""


class NotFound(KafkaMLError):
    """An id or name that does not exist."""


class Conflict(KafkaMLError):
    """A duplicate name, or an object still in use."""


class InvalidInput(KafkaMLError, ValueError):
    """A setting, argument or payload that is wrong; the message says which and why."""


class ModelCodeError(InvalidInput):
    """Model code that does not build; ``line`` is set when the error has one."""

    def __init__(self, message: str, line: int | None = None):
        super().__init__(message if line is None else f"line {line}: {message}")
        self.reason = message
        self.line = line


class Unavailable(KafkaMLError):
    """A service (broker, Ray, store) that cannot be reached or started."""


class RunStopped(KafkaMLError):
    """A training run found its result no longer training (stopped, failed or deleted): it
    ends without writing anything more."""


def store_error_text(e: DBAPIError) -> str:
    """A database error in one line for users: what the metadata store refused and why.

    >>> from sqlalchemy.exc import IntegrityError
    >>> store_error_text(IntegrityError("INSERT", {}, Exception("UNIQUE constraint failed")))[:66]
    'the metadata store refused the change (UNIQUE constraint failed): '
    """
    why = str(e.orig).strip().splitlines()[0] if e.orig is not None else type(e).__name__
    if isinstance(e, IntegrityError):
        return (
            f"the metadata store refused the change ({why}): another process changed the "
            "same rows at the same time; try again"
        )
    return f"the metadata store failed: {why}"
