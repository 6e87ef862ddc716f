"""The training pool's bookkeeping (`kafkaml_ray.train.pool`) on a real local Ray: one
runner per deployment at a time, and a stop that refuses the deployment's later training
tasks (a runner that was submitting when the stop came) until its runner starts again."""

from __future__ import annotations

import sys
import time
from pathlib import Path

import ray
import ray.cloudpickle

from kafkaml_ray.train import pool
from tests.conftest import wait_until


def _wait(seconds: float, told: str | None = None) -> float:
    """A stand-in for a runner or a training task: a cancel interrupts it, as it does them
    (it writes to ``told`` that it runs, then that it was interrupted)."""
    from kafkaml_ray._private.rayutil import cancellable

    if told:
        Path(told).write_text("running")
    try:
        with cancellable():  # (a cancel is seen between steps, as in a runner's ray.wait loop)
            deadline = time.monotonic() + seconds
            while time.monotonic() < deadline:
                time.sleep(0.05)
    except KeyboardInterrupt:
        if told:
            Path(told).write_text("interrupted")
        raise
    return seconds


def test_a_deployment_has_one_runner_and_a_stop_refuses_its_later_tasks(
    ray_cluster, settings, tmp_path
):
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # (`_wait`, for workers)
    owner, other = pool.runner_name(settings, 1), pool.runner_name(settings, 2)
    assert not pool.running(settings, owner)
    told = tmp_path / "runner"
    assert pool.start(settings, owner, _wait, 3000.0, str(told))
    assert not pool.start(settings, owner, _wait, 300.0)  # (a hand-over made again)
    assert pool.running(settings, owner) and not pool.running(settings, other)
    quick = pool.submit(settings, owner, _wait, {"num_cpus": 0}, False, 0.1)
    assert ray.get(quick, timeout=60) == 0.1

    wait_until(told.exists, 60, "the runner to run")
    assert pool.cancel(settings, owner, timeout=60) == 1  # the runner (the task ended)
    assert told.read_text() == "interrupted"  # (the cancel waits for its end)
    assert not pool.running(settings, owner)
    # A runner that submits after the stop: refused, so nothing of it runs on.
    assert pool.submit(settings, owner, _wait, {"num_cpus": 0}, False, 300.0) is None
    assert not pool.running(settings, owner)
    assert pool.start(settings, other, _wait, 0.1)  # (other deployments are not stopped)

    # Its runner started again (an online result resumed): its tasks run again.
    assert pool.start(settings, owner, _wait, 0.1)
    again = pool.submit(settings, owner, _wait, {"num_cpus": 0}, False, 0.1)
    assert again is not None and ray.get(again, timeout=60) == 0.1


def test_a_run_in_the_pool_of_older_code_is_seen_and_stopped(ray_cluster, settings, tmp_path):
    """After an upgrade on a running cluster, the old code's pool runs its runs to their end:
    the new code must not start a second runner for one of them, and a stop must reach it."""
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])
    from kafkaml_ray._private.rayutil import start_detached

    older = start_detached(settings, pool._Pool, "training-pool-0lder", max_concurrency=16)
    try:
        owner, told = pool.runner_name(settings, 7), tmp_path / "runner"
        options = {"num_cpus": 0, "max_retries": 0, "name": owner}
        assert ray.get(older.start.remote(owner, _wait, options, 3000.0, str(told)))
        assert pool.running(settings, owner)
        assert not pool.start(settings, owner, _wait, 3000.0)  # (no second runner)
        wait_until(told.exists, 60, "the runner to run")
        assert pool.cancel(settings, owner, timeout=60) == 1
        assert told.read_text() == "interrupted"
        assert not pool.running(settings, owner)
    finally:
        ray.kill(older)
