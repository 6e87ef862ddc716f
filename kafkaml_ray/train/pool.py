"""The training pool: one long-lived detached actor per Ray cluster (`pool_name`) that
submits every deployment's runner task and training tasks, so that their worker processes
stay warm from one run to the next.

Ray reuses an idle worker process only for tasks under the same root detached actor. A
runner that was a detached actor of its own (it must outlive the listener that starts it)
started a fresh process for itself and for every task it submitted: about 2 s to start the
runner, 2.5 s for its read tasks, and each time the framework's import (about 3 s for
PyTorch, 4 s for TensorFlow on 2 cores). Submitted by the pool, the runner (`start`), the
Ray Data read tasks it submits, and each model's training task (`submit`) land on idle
processes that did the same work before, when Ray has kept one. A process only ever trains
one framework (each task names its framework in its runtime environment, so the two never
share a process: TensorFlow before PyTorch in one process aborts), and a process that used
a GPU is not reused.

The pool owns the tasks and knows which deployment each belongs to (its runner's name,
`runner_name`): `cancel` stops a deployment's runner and training tasks whoever asks (a
``--submit`` job's runner is the job's driver, whose training tasks the pool still owns),
and refuses the deployment's later submissions until its runner starts again, so a stop
that comes while a runner submits leaves nothing running. `running` says whether a
deployment's runner or training tasks run: the pool owns them, so they end with it.

A process is reused only for the same model code and the same kafkaml-ray code
(`warm_key`, in the task's runtime environment, which Ray matches before it reuses a
worker): model code may change a process for good (``torch.set_default_dtype``, thread
counts, ``sys.path``, monkeypatching), and no reset finds all of it. The pool is named for
the kafkaml-ray code it runs (`package_fingerprint`): after an upgrade on a running cluster
a new pool starts, and no run trains in a process of the old code. `running` and `cancel`
ask every pool, so the runs an old pool still runs are seen and stopped.

The pool reserves no CPU; each task reserves its own (`task.task_options`).
"""

from __future__ import annotations

import logging
import threading
from typing import Any

from kafkaml_ray._private.rayutil import package_fingerprint
from kafkaml_ray.settings import Settings

__all__ = [
    "start",
    "submit",
    "cancel",
    "running",
    "runner_name",
    "warm_key",
    "package_fingerprint",
    "pool_name",
]

logger = logging.getLogger(__name__)


_PREFIX = "training-pool-"


def pool_name() -> str:
    """The training pool of this kafkaml-ray code."""
    return f"{_PREFIX}{package_fingerprint()}"


def warm_key(code_sha256: str) -> dict[str, str]:
    """Environment variables for a training task's runtime environment: Ray reuses a warm
    process only for a task of the same model code and kafkaml-ray code."""
    return {"KAFKAML_CODE_SHA256": code_sha256, "KAFKAML_PACKAGE": package_fingerprint()}


def runner_name(settings: Settings, deployment_id: int) -> str:
    """The name of a deployment's runner task, which also names its tasks in the pool."""
    from kafkaml_ray._private.rayutil import actor_name

    return actor_name("training", settings, deployment_id)


class _Pool:
    """Submits the runners' and their training tasks (Ray keeps their processes warm)."""

    def __init__(self) -> None:
        self._remote: dict[tuple[Any, bool], Any] = {}
        self._lock = threading.Lock()  # (the methods run in a thread each)
        self._tasks: dict[str, list[Any]] = {}  # owner: its unfinished tasks, runner first
        self._stopped: set[str] = set()  # owners cancelled since their runner started

    def start(self, owner: str, fn: Any, options: dict, *args: Any) -> bool:
        """Run ``fn(*args)`` as ``owner``'s runner task, unless a task of it runs."""
        with self._lock:
            if self._pending(owner):
                return False
            self._stopped.discard(owner)
            ref = self._submit(fn, options, False, args)
            self._tasks[owner] = [ref]
            return True

    def submit(self, owner: str, fn: Any, options: dict, gpu: bool, *args: Any) -> list[Any]:
        with self._lock:
            if owner in self._stopped:
                return []
            for name in list(self._tasks):  # (forget the finished ones)
                self._pending(name)
            ref = self._submit(fn, options, gpu, args)
            self._tasks.setdefault(owner, []).append(ref)
            return [ref]

    def running(self, owner: str) -> bool:
        with self._lock:
            return self._pending(owner)

    def cancel(self, owner: str, timeout: float) -> int:
        """Cancel ``owner``'s tasks and wait up to ``timeout`` s for them to end (a task a
        cancel could not interrupt is ended by its run's next progress report, which finds
        its result stopped); how many were running."""
        import ray

        with self._lock:
            self._stopped.add(owner)
            self._pending(owner)  # (the finished ones are not counted)
            refs = self._tasks.pop(owner, [])
        for ref in refs:
            ray.cancel(ref)
        if refs:
            _, left = ray.wait(refs, num_returns=len(refs), timeout=timeout)
            if left:
                logger.warning("%s: %d tasks still running after the stop", owner, len(left))
        return len(refs)

    def _submit(self, fn: Any, options: dict, gpu: bool, args: tuple) -> Any:
        import ray

        if (fn, gpu) not in self._remote:
            self._remote[(fn, gpu)] = ray.remote(max_calls=1)(fn) if gpu else ray.remote(fn)
        return self._remote[(fn, gpu)].options(**options).remote(*args)

    def _pending(self, owner: str) -> bool:
        """Whether ``owner`` has unfinished tasks (the finished ones are forgotten)."""
        import ray

        refs = self._tasks.get(owner, [])
        _, pending = ray.wait(refs, num_returns=len(refs), timeout=0) if refs else ([], [])
        if pending:
            self._tasks[owner] = pending
        else:
            self._tasks.pop(owner, None)
        return bool(pending)


def _pool(settings: Settings) -> Any:
    from kafkaml_ray._private.rayutil import start_detached

    return start_detached(settings, _Pool, pool_name(), get_if_exists=True, max_concurrency=16)


def start(settings: Settings, owner: str, fn: Any, *args: Any) -> bool:
    """Run ``fn(*args)`` as the runner task ``owner`` (`runner_name`) in the cluster's
    training pool (started here when it is not running), unless a runner or training task
    of ``owner`` runs already (`running`); whether it started. The task reserves no CPU (what
    it submits reserves its own) and is not retried."""
    import ray

    if running(settings, owner):
        return False
    options = dict(num_cpus=0, max_retries=0, name=owner)
    return ray.get(_pool(settings).start.remote(owner, fn, options, *args))


def submit(
    settings: Settings, owner: str, fn: Any, options: dict[str, Any], gpu: bool, *args: Any
) -> Any:
    """``fn(*args)`` as a Ray task with ``options`` (a fresh process after it if ``gpu``),
    submitted by the cluster's training pool (started here when it is not running) on
    behalf of ``owner`` (`runner_name`); its ObjectRef, which the caller may wait on, or
    None when ``owner`` was cancelled (`cancel`) since its runner started."""
    import ray

    refs = ray.get(_pool(settings).submit.remote(owner, fn, options, gpu, *args))
    return refs[0] if refs else None


def _pools(settings: Settings) -> list[Any]:
    """Every training pool on the cluster: this code's, and those of other kafkaml-ray code
    (an upgrade on a running cluster leaves the old pool running its runs to their end)."""
    from ray.util import list_named_actors

    from kafkaml_ray._private.rayutil import NAMESPACE, ensure_ray, find_actor

    ensure_ray(settings)
    names = [
        a["name"]
        for a in list_named_actors(all_namespaces=True)
        if a["namespace"] == NAMESPACE and a["name"].startswith(_PREFIX)
    ]
    return [found for name in names if (found := find_actor(settings, name)) is not None]


def running(settings: Settings, owner: str) -> bool:
    """Whether a training pool runs a runner or training task of ``owner``. Starts no pool."""
    import ray

    return any(ray.get([p.running.remote(owner) for p in _pools(settings)], timeout=60))


def cancel(settings: Settings, owner: str, timeout: float = 30.0) -> int:
    """Cancel the runner and training tasks the training pools run for ``owner`` and wait for
    them to end (up to ``timeout`` s); how many there were. ``owner``'s later submissions
    are refused until its runner starts again. Starts no pool where none runs."""
    import ray

    calls = [p.cancel.remote(owner, timeout) for p in _pools(settings)]
    return sum(ray.get(calls, timeout=timeout + 30))
