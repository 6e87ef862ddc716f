"""The training pool: one long-lived detached actor per Ray cluster (`POOL_NAME`) that
submits the training tasks of every deployment, so that their worker processes stay warm
from one run to the next.

Ray reuses an idle worker process only for tasks under the same root detached actor. Each
deployment's runner is a detached actor of its own (it must outlive the listener that starts
it), so tasks it submitted itself always started a fresh process: about 1.5 s to start
and, each time, the framework's import (about 3 s for PyTorch, 4 s for TensorFlow on 2
cores). Submitted by the pool, a run's task lands on an idle process that already trained
with the same framework, when Ray has kept one. A process only ever trains one framework
(each task names its framework in its runtime environment, so the two never share a
process: TensorFlow before PyTorch in one process aborts), and a process that used a GPU
is not reused.

The pool owns the tasks and knows which deployment each belongs to (its runner's name,
`runner_name`): `cancel` stops a deployment's tasks whoever asks, the runner or a stop that
finds no runner (a ``--submit`` job whose driver was killed). The runner waits on the
ObjectRef it is given back.

A process is reused only for the same model code and the same kafkaml-ray code
(`warm_key`, in the task's runtime environment, which Ray matches before it reuses a
worker): model code may change a process for good (``torch.set_default_dtype``, thread
counts, ``sys.path``, monkeypatching), and no reset finds all of it. The pool is named for
the kafkaml-ray code it runs (`package_fingerprint`): after an upgrade on a running cluster
a new pool starts, and no run trains in a process of the old code.

The pool reserves no CPU; each task reserves its own (`task.task_options`).
"""

from __future__ import annotations

import logging
from typing import Any

from kafkaml_ray._private.rayutil import package_fingerprint
from kafkaml_ray.settings import Settings

__all__ = ["submit", "cancel", "runner_name", "warm_key", "package_fingerprint", "pool_name"]

logger = logging.getLogger(__name__)


def pool_name() -> str:
    """The training pool of this kafkaml-ray code."""
    return f"training-pool-{package_fingerprint()}"


def warm_key(code_sha256: str) -> dict[str, str]:
    """Environment variables for a training task's runtime environment: Ray reuses a warm
    process only for a task of the same model code and kafkaml-ray code."""
    return {"KAFKAML_CODE_SHA256": code_sha256, "KAFKAML_PACKAGE": package_fingerprint()}


def runner_name(settings: Settings, deployment_id: int) -> str:
    """The name of a deployment's runner actor, which also names its tasks in the pool."""
    from kafkaml_ray._private.rayutil import actor_name

    return actor_name("training", settings, deployment_id)


class _Pool:
    """Submits training tasks for the runners (Ray keeps their processes warm)."""

    def __init__(self) -> None:
        self._remote: dict[tuple[Any, bool], Any] = {}
        self._tasks: dict[str, list[Any]] = {}  # owner: its unfinished tasks

    def submit(self, owner: str, fn: Any, options: dict, gpu: bool, *args: Any) -> list[Any]:
        import ray

        if (fn, gpu) not in self._remote:
            self._remote[(fn, gpu)] = ray.remote(max_calls=1)(fn) if gpu else ray.remote(fn)
        ref = self._remote[(fn, gpu)].options(**options).remote(*args)
        for name, refs in list(self._tasks.items()):  # (forget the finished ones)
            _, pending = ray.wait(refs, num_returns=len(refs), timeout=0)
            self._tasks[name] = pending
            if not pending:
                del self._tasks[name]
        self._tasks.setdefault(owner, []).append(ref)
        return [ref]

    def cancel(self, owner: str, timeout: float) -> int:
        """Cancel ``owner``'s tasks and wait up to ``timeout`` s for them to end (a task a
        cancel could not interrupt is ended by its run's next progress report, which finds
        its result stopped); how many were running."""
        import ray

        refs = self._tasks.pop(owner, [])
        for ref in refs:
            ray.cancel(ref)
        if refs:
            _, left = ray.wait(refs, num_returns=len(refs), timeout=timeout)
            if left:
                logger.warning(
                    "%s: %d training tasks still running after the stop", owner, len(left)
                )
        return len(refs)


def _pool(settings: Settings) -> Any:
    from kafkaml_ray._private.rayutil import start_detached

    return start_detached(settings, _Pool, pool_name(), get_if_exists=True, max_concurrency=16)


def submit(
    settings: Settings, owner: str, fn: Any, options: dict[str, Any], gpu: bool, *args: Any
) -> Any:
    """``fn(*args)`` as a Ray task with ``options`` (a fresh process after it if ``gpu``),
    submitted by the cluster's training pool (started here when it is not running) on
    behalf of ``owner`` (`runner_name`); its ObjectRef, which the caller may wait on."""
    import ray

    return ray.get(_pool(settings).submit.remote(owner, fn, options, gpu, *args))[0]


def cancel(settings: Settings, owner: str, timeout: float = 30.0) -> int:
    """Cancel the training tasks the pool runs for ``owner`` and wait for them to end (up to
    ``timeout`` s); how many there were. Starts no pool where none runs."""
    import ray

    from kafkaml_ray._private.rayutil import find_actor

    found = find_actor(settings, pool_name())
    if found is None:
        return 0
    return ray.get(found.cancel.remote(owner, timeout), timeout=timeout + 30)
