"""Validating model code: run it in a Ray worker process, with a time and memory limit.

The caller's process (CLI, UI, API) never executes model code. It asks the framework's
validator, a detached Ray actor (`_Validator`, one per framework and kafkaml-ray code) that
imported the framework once and never runs model code itself: each validation builds the
model in a child process forked from it, which caps its memory, writes what it found (or the
error with its line) to a pipe as JSON and exits; a child past the time limit is killed. A
fresh process per model, as before, without a Ray worker's start and the framework's
import each time (4-9 s on 2 cores; a fork and the build take 0.05-0.8 s). The validator
exits after ``settings.validator_idle_s`` seconds without work (``KAFKAML_VALIDATOR_IDLE_S``,
10 minutes by default), handing back its memory (0.5-0.7 GiB for PyTorch or TensorFlow).

What a success found is kept for the calling process's life, by the code's hash and the
limits: the same code is not built twice (an example registered again, an edit undone, the
panel's long life); an error is never kept.
"""

from __future__ import annotations

import json
import logging
import time
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
#: Seconds a validator may take to start (Ray's worker start and the framework's import).
_START_S = 120.0


class _Validator:
    """A framework's validator (see the module's docstring): builds each model in a child
    process forked from it. Its threads each fork one child at a time."""

    def __init__(self, framework: str, idle_s: float) -> None:
        import threading

        frameworks.get(framework).preload()
        self.framework, self.idle_s = framework, idle_s
        self.last, self.busy = time.monotonic(), 0
        self.lock = threading.Lock()
        threading.Thread(target=self._exit_when_idle, daemon=True).start()

    def describe(self, code: str, imports: str, memory_mb: int, timeout: float) -> str:
        """`_describe` in a forked child, as JSON text; ``{"timeout": true}`` when it did
        not answer within ``timeout`` s, ``{"crashed": "<why>"}`` when it died silent."""
        with self.lock:
            self.busy += 1
        try:
            return self._in_child(code, imports, memory_mb, timeout)
        finally:
            with self.lock:
                self.busy -= 1
                self.last = time.monotonic()

    def _in_child(self, code: str, imports: str, memory_mb: int, timeout: float) -> str:
        import os
        import select
        import signal

        read, write = os.pipe()
        pid = os.fork()
        if pid == 0:  # the child: build, answer, exit (none of the actor's clean-up)
            try:
                os.close(read)
                data = _describe(self.framework, code, imports, memory_mb).encode()
                while data:
                    data = data[os.write(write, data) :]
            finally:
                os._exit(0)
        os.close(write)
        chunks, deadline, timed_out = [], time.monotonic() + timeout, False
        try:
            while True:
                left = deadline - time.monotonic()
                if left <= 0 or not select.select([read], [], [], left)[0]:
                    timed_out = True
                    os.kill(pid, signal.SIGKILL)
                    break
                if not (chunk := os.read(read, 1 << 16)):
                    break
                chunks.append(chunk)
        finally:
            os.close(read)
            _, status = os.waitpid(pid, 0)
        if timed_out:
            return json.dumps({"timeout": True})
        if not chunks:
            why = (
                f"killed by signal {os.WTERMSIG(status)}"
                if os.WIFSIGNALED(status)
                else f"exit status {os.waitstatus_to_exitcode(status)}"
            )
            return json.dumps({"crashed": why})
        return b"".join(chunks).decode()

    def _exit_when_idle(self) -> None:
        import os

        while True:
            time.sleep(min(self.idle_s, 30.0))
            with self.lock:
                if not self.busy and time.monotonic() - self.last > self.idle_s:
                    os._exit(0)  # (Ray frees its name: the next validation starts one)


def _validator(settings: Settings, framework: str) -> Any:
    """The framework's validator, started when none runs. It reserves no CPU (it idles
    between validations, each of which lasts a fraction of a second) and writes nothing
    shared, so any cluster may run it (no `check_shared_state`)."""
    import ray

    from kafkaml_ray._private.rayutil import NAMESPACE, package_fingerprint

    named = ray.remote(_Validator).options(
        name=f"validator-{framework}-{package_fingerprint()}",
        namespace=NAMESPACE,
        lifetime="detached",
        get_if_exists=True,
        num_cpus=0,
        max_restarts=0,
        max_concurrency=4,
    )
    return named.remote(framework, settings.validator_idle_s)


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
    limit = settings.validation_timeout_s
    for attempt in (1, 2):  # (a validator that has just exited for idleness: a new one)
        try:
            call = _validator(settings, framework).describe.remote(
                code, imports, settings.validation_memory_mb, limit
            )
            # Its first call waits for the validator to start (the framework's import).
            out = json.loads(ray.get(call, timeout=limit + _START_S))
            break
        except ray.exceptions.RayActorError as e:
            if attempt == 2:
                raise ModelCodeError(
                    f"the {framework} validator died while it built the model code: "
                    f"{type(e).__name__}"
                ) from None
        except ray.exceptions.GetTimeoutError:
            raise ModelCodeError(
                f"the {framework} validator did not answer within {limit + _START_S:.0f}s "
                "(it was starting, or busy with other validations)"
            ) from None
    if out.get("timeout"):
        raise ModelCodeError(
            f"the model code did not finish within {limit:.0f}s "
            "(KAFKAML_VALIDATION_TIMEOUT); does it loop forever?"
        )
    if "crashed" in out:
        raise ModelCodeError(f"the model code crashed its process: {out['crashed']}")
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
