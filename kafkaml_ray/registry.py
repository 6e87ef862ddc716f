"""Validating model code: run it in a Ray worker process, with a time and memory limit.

The caller's process (CLI, UI, API) never executes model code; it asks a Ray task, which
builds the model in a fresh worker (``max_calls=1``: the worker exits afterwards) and
returns what it found, or the error with its line.
"""

from __future__ import annotations

import logging
from typing import Any, Literal

from kafkaml_ray.errors import ModelCodeError
from kafkaml_ray.settings import Settings

__all__ = ["validate_model", "Framework", "FRAMEWORKS"]

logger = logging.getLogger(__name__)
Framework = Literal["pytorch", "tensorflow"]
FRAMEWORKS: tuple[str, ...] = ("pytorch", "tensorflow")


def _describe(framework: str, code: str, imports: str, memory_mb: int) -> dict[str, Any]:
    from kafkaml_ray._private.modelcode import describe_model, limit_memory

    limit_memory(memory_mb)
    try:
        return {"ok": describe_model(framework, code, imports)}
    except ModelCodeError as e:
        return {"error": e.reason, "line": e.line}
    except MemoryError:
        return {"error": "MemoryError: the model code ran out of memory", "line": None}


def validate_model(
    framework: str, code: str, imports: str = "", settings: Settings | None = None
) -> dict[str, Any]:
    """Build model code in a Ray worker; return input/output shapes and parameter count.

    Raises :class:`ModelCodeError` with the reason (and line) when the code does not build,
    does not return within ``settings.validation_timeout_s`` or exhausts
    ``settings.validation_memory_mb``.
    """
    import ray

    from kafkaml_ray._private.rayutil import ensure_ray

    if framework not in FRAMEWORKS:
        raise ModelCodeError(f"unknown framework {framework!r}: use 'pytorch' or 'tensorflow'")
    if not code.strip():
        raise ModelCodeError("the model code is empty")
    settings = settings or Settings.from_env()
    ensure_ray(settings)
    task = ray.remote(num_cpus=0.5, max_calls=1, max_retries=0)(_describe)
    ref = task.remote(framework, code, imports, settings.validation_memory_mb)
    try:
        out = ray.get(ref, timeout=settings.validation_timeout_s)
    except ray.exceptions.GetTimeoutError:
        ray.cancel(ref, force=True)
        raise ModelCodeError(
            f"the model code did not finish within {settings.validation_timeout_s:.0f}s "
            "(KAFKAML_VALIDATION_TIMEOUT); does it loop forever?"
        ) from None
    except (ray.exceptions.WorkerCrashedError, ray.exceptions.OutOfMemoryError) as e:
        raise ModelCodeError(
            f"the model code crashed its worker process: {type(e).__name__}"
        ) from None
    if "error" in out:
        raise ModelCodeError(out["error"], out["line"])
    return out["ok"]
