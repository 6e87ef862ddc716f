"""Validating model code: run it in a Ray worker process, with a time and memory limit.

The caller's process (CLI, UI, API) never executes model code; it asks a Ray task, which
builds the model in a fresh worker (``max_calls=1``: the worker exits afterwards) and
returns what it found, or the error with its line. What a success found is kept for the
process's life, by the code's hash and the limits: the same code is not built twice (an
example registered again, an edit undone, the panel's long life); an error is never kept.
"""

from __future__ import annotations

import json
import logging
from typing import Any

from sqlalchemy import func, select
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session

from kafkaml_ray import frameworks
from kafkaml_ray.errors import Conflict, ModelCodeError, store_error_text
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import MLModel, ModelVersion

__all__ = ["validate_model", "code_sha256", "model_version"]

logger = logging.getLogger(__name__)
#: What validated code was found to be, by (framework, code hash, memory and time limits).
_FOUND: dict[tuple[str, str, int, float], str] = {}  # (as JSON text: each caller a copy)
_FOUND_MAX = 256


def _describe(framework: str, code: str, imports: str, memory_mb: int) -> str:
    """What `validate_model` finds, as JSON text: nothing that model code made (a shape
    object, a user-defined exception) reaches the caller's process, where unpickling it
    could run that code."""
    from kafkaml_ray.frameworks.code import limit_memory

    limit_memory(memory_mb)
    try:
        out: dict[str, Any] = {"ok": frameworks.get(framework).describe(code, imports)}
    except ModelCodeError as e:
        out = {"error": e.reason, "line": e.line}
    except MemoryError:
        out = {"error": "MemoryError: the model code ran out of memory", "line": None}
    except BaseException as e:  # noqa: BLE001 - returned as text, never as the object
        out = {"error": f"{type(e).__name__}: {e}", "line": None}
    return json.dumps(out)


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

    frameworks.get(framework)  # (an unknown one is refused here, before Ray)
    if not code.strip():
        raise ModelCodeError("the model code is empty")
    settings = settings or Settings.from_env()
    key = (
        framework,
        code_sha256(code, imports),
        settings.validation_memory_mb,
        settings.validation_timeout_s,
    )
    if key in _FOUND:
        return json.loads(_FOUND[key])
    ensure_ray(settings)
    task = ray.remote(num_cpus=0.5, max_calls=1, max_retries=0)(_describe)
    ref = task.remote(framework, code, imports, settings.validation_memory_mb)
    try:
        out = json.loads(ray.get(ref, timeout=settings.validation_timeout_s))
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
    if len(_FOUND) >= _FOUND_MAX:
        _FOUND.pop(next(iter(_FOUND)))
    _FOUND[key] = json.dumps(out["ok"])
    return out["ok"]


def code_sha256(code: str, imports: str = "") -> str:
    """The content hash of a model's code and imports (`ModelVersion.sha256`).

    >>> code_sha256("model = None")[:12]
    '5d853bf20331'
    """
    import hashlib

    return hashlib.sha256(f"{imports}\0{code}".encode()).hexdigest()


def model_version(s: Session, model: MLModel) -> ModelVersion:
    """The version of ``model``'s current code, added when it is new."""
    sha = code_sha256(model.code, model.imports)
    found = s.scalar(
        select(ModelVersion).where(ModelVersion.model_id == model.id, ModelVersion.sha256 == sha)
    )
    if found is not None:
        return found
    last = s.scalar(select(func.max(ModelVersion.number)).where(ModelVersion.model_id == model.id))
    version = ModelVersion(
        model_id=model.id, number=(last or 0) + 1, sha256=sha, imports=model.imports,
        code=model.code, input_shape=model.input_shape, output_shape=model.output_shape,
        metrics=model.metrics,
    )  # fmt: skip
    s.add(version)
    try:
        s.flush()
    except IntegrityError as e:  # (another process added a version at the same moment)
        raise Conflict(store_error_text(e)) from None
    return version
