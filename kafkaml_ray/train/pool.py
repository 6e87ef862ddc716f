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
is not reused. The pool owns the tasks; the runner waits on, and can cancel, the ObjectRef
it is given back.

The pool reserves no CPU; each task reserves its own (`runner._task_options`).
"""

from __future__ import annotations

from typing import Any

from kafkaml_ray.settings import Settings

__all__ = ["submit", "POOL_NAME"]

POOL_NAME = "training-pool"


class _Pool:
    """Submits training tasks for the runners (Ray keeps their processes warm)."""

    def __init__(self) -> None:
        self._remote: dict[tuple[Any, bool], Any] = {}

    def submit(self, fn: Any, options: dict[str, Any], gpu: bool, *args: Any) -> list[Any]:
        import ray

        if (fn, gpu) not in self._remote:
            self._remote[(fn, gpu)] = ray.remote(max_calls=1)(fn) if gpu else ray.remote(fn)
        return [self._remote[(fn, gpu)].options(**options).remote(*args)]


def submit(settings: Settings, fn: Any, options: dict[str, Any], gpu: bool, *args: Any) -> Any:
    """``fn(*args)`` as a Ray task with ``options`` (a fresh process after it if ``gpu``),
    submitted by the cluster's training pool (started here when it is not running); its
    ObjectRef, which the caller may wait on and cancel."""
    import ray

    from kafkaml_ray._private.rayutil import start_detached

    pool = start_detached(settings, _Pool, POOL_NAME, get_if_exists=True, max_concurrency=16)
    return ray.get(pool.submit.remote(fn, options, gpu, *args))[0]
