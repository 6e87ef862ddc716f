"""One model's training as a Ray task: its Ray Train run (one worker in the task itself, or
its framework's worker group), the task's resources and process, and its final status.
`kafkaml_ray.train.runner` submits one per model through the training pool."""

from __future__ import annotations

import logging
import time
from typing import Any

from sqlalchemy import func

from kafkaml_ray import frameworks
from kafkaml_ray.errors import RunStopped
from kafkaml_ray.model_code import code_sha256
from kafkaml_ray.store import ResultStatus, Store, TrainingResult, move_result
from kafkaml_ray.train import pool
from kafkaml_ray.train.reporter import RunSpec, error_text

__all__ = ["worker_loop", "trainer_for", "task_options", "train_one"]

logger = logging.getLogger(__name__)


def worker_loop(config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs."""
    import ray.train

    from kafkaml_ray.train.fit import train

    spec: RunSpec = config["spec"]
    spec.marks["worker"] = time.time()
    ctx = ray.train.get_context()
    shards = {name: ray.train.get_dataset_shard(name) for name in ("train", "val", "test")}
    train(spec, shards, rank=ctx.get_world_rank(), distributed=ctx.get_world_size() > 1)


def trainer_for(spec: RunSpec, num_workers: int) -> Any:
    """The Ray Train trainer of a run of ``num_workers`` workers. One worker needs no
    distributed backend, so Ray Train's own data-parallel trainer runs it without a
    process group and without importing the framework in this task. Several use their
    framework's trainer (`frameworks.base.Framework.trainer`: PyTorch's process group,
    XGBoost's collective); the frameworks that train on one refuse more at the deploy."""
    if num_workers == 1:
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

        return DataParallelTrainer
    return frameworks.get(spec.framework).trainer()


def task_options(spec: RunSpec) -> dict[str, Any]:
    """The Ray task that runs one model's Ray Train run (submitted by the training pool,
    `kafkaml_ray.train.pool`, which keeps its process warm for the next run of the same
    framework). A one-worker run trains in this task (Ray Train's local mode,
    ``num_workers=0``), which so holds the worker's CPU and GPU share: no controller,
    worker or data-split actor is started (about 10 s of every run's start on 2 cores,
    `benchmarks/results/train.md`). A run of several workers holds nothing here: its
    workers do. The framework in the task's runtime environment keeps PyTorch and
    TensorFlow runs in processes of their own (TensorFlow, then PyTorch, in one process
    aborts; see ``frameworks/keras.py``)."""
    one = spec.train_args.get("num_workers", 1) == 1
    return dict(
        num_cpus=1 if one else 0,
        num_gpus=spec.gpu_fraction if one else 0,
        max_retries=0,
        name=f"train-result-{spec.result_id}",
        runtime_env={
            "env_vars": {
                "KAFKAML_TRAINING_FRAMEWORK": spec.framework,
                **pool.warm_key(code_sha256(spec.code, spec.imports)),
            }
        },
    )


def train_one(spec: RunSpec, datasets: dict[str, Any], num_workers: int) -> None:
    """One model's Ray Train run; records its final status. Runs as a Ray task
    (`task_options`)."""
    import ray.train

    store = Store.for_url(spec.settings.db_url)
    start = time.perf_counter()
    if num_workers == 1:
        scaling = ray.train.ScalingConfig(num_workers=0)  # (local mode: in this task)
    else:
        scaling = ray.train.ScalingConfig(
            num_workers=num_workers,
            use_gpu=spec.gpu_fraction > 0,
            resources_per_worker={
                "CPU": 1,
                **({"GPU": spec.gpu_fraction} if spec.gpu_fraction else {}),
            },
        )
    run_config = ray.train.RunConfig(
        name=f"kafkaml-result-{spec.result_id}",
        storage_path=str(spec.settings.home / "ray_results"),
        failure_config=ray.train.FailureConfig(max_failures=0),
    )
    common = dict(
        train_loop_per_worker=worker_loop,
        train_loop_config={"spec": spec},
        scaling_config=scaling,
        run_config=run_config,
        datasets=datasets,
        dataset_config=ray.train.DataConfig(datasets_to_split=["train"]),
    )
    from kafkaml_ray._private.rayutil import cancellable

    error = None
    try:
        with cancellable():  # (a stop's ray.cancel interrupts the run)
            trainer_for(spec, num_workers)(**common).fit()
    except RunStopped:
        logger.info("result %d: stopped", spec.result_id)
        return
    except Exception as e:  # noqa: BLE001 - recorded on the result
        logger.exception("training result %d failed", spec.result_id)
        error = error_text(e)
    fields: dict[str, Any] = (
        {"status": ResultStatus.FAILED, "error": error}
        if error
        else {
            "status": ResultStatus.FINISHED,
            "training_time_s": func.coalesce(
                TrainingResult.training_time_s, time.perf_counter() - start
            ),
        }
    )
    with store.session() as s:  # (stopped or deleted meanwhile: nothing is written)
        row = s.get(TrainingResult, spec.result_id)
        if row is not None and row.phases:
            fields["phases"] = {**row.phases, "ended": time.time()}
        move_result(s, spec.result_id, fields.pop("status"), only_from=[ResultStatus.TRAINING],
                    **fields)  # fmt: skip
    store.dispose()
