"""Running a training deployment: read its datasource once, split it, and train every model
of its configuration in parallel, each as its own Ray Train run in a Ray task of its own.
A run of one worker (the default) trains in that task, which holds its CPU and GPU share
(Ray Train's local mode); a PyTorch run of several workers is a Ray Train worker group
with a torch process group, started by that task.

`run_deployment` is the one entry point, called by the deployment's runner actor (started by
the control listener through `kafkaml_ray.train.launch`) or by a Ray job
(``python -m kafkaml_ray.train``; what ``train deploy --submit`` and a KubeRay RayJob run).
"""

from __future__ import annotations

import logging
import threading
import time
from datetime import UTC
from typing import Any

from sqlalchemy import func

from kafkaml_ray import frameworks
from kafkaml_ray.errors import InvalidInput, RunStopped
from kafkaml_ray.frameworks import TrainedModel
from kafkaml_ray.ingest.control import parse_ranges, parse_sources
from kafkaml_ray.ingest.dataset import ReadError, read_ranges, split_dataset, split_sizes
from kafkaml_ray.lineage import params_for, record
from kafkaml_ray.options import OnlineOptions
from kafkaml_ray.registry import code_sha256
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import (
    Datasource,
    DatasourceStatus,
    ResultStatus,
    Store,
    TrainingDeployment,
    TrainingResult,
    set_result_if,
)
from kafkaml_ray.train import pool
from kafkaml_ray.train.reporter import RunSpec, error_text

__all__ = ["run_deployment", "wait_for_datasource", "fail_results", "cancel_runs"]

logger = logging.getLogger(__name__)

# The Ray Train tasks `run_deployment` started in this process, for `cancel_runs`.
_running: list[Any] = []
_stopping = threading.Event()


def _worker_loop(config: dict[str, Any]) -> None:
    """The function every Ray Train worker runs."""
    import ray.train

    from kafkaml_ray.train.fit import train

    spec: RunSpec = config["spec"]
    spec.marks["worker"] = time.time()
    ctx = ray.train.get_context()
    shards = {name: ray.train.get_dataset_shard(name) for name in ("train", "val", "test")}
    train(spec, shards, rank=ctx.get_world_rank(), distributed=ctx.get_world_size() > 1)


def _trainer(spec: RunSpec, num_workers: int) -> Any:
    """The Ray Train trainer of a run of ``num_workers`` workers. One worker needs no
    distributed backend, so Ray Train's own data-parallel trainer runs it without a
    process group and without importing the framework in this task. Several use their
    framework's trainer (`frameworks.base.Framework.trainer`: PyTorch's process group,
    XGBoost's collective); the frameworks that train on one refuse more at the deploy."""
    if num_workers == 1:
        from ray.train.v2.api.data_parallel_trainer import DataParallelTrainer

        return DataParallelTrainer
    return frameworks.get(spec.framework).trainer()


def _task_options(spec: RunSpec) -> dict[str, Any]:
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


def _train_one(spec: RunSpec, datasets: dict[str, Any], num_workers: int) -> None:
    """One model's Ray Train run; records its final status. Runs as a Ray task
    (`_task_options`)."""
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
        train_loop_per_worker=_worker_loop,
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
            _trainer(spec, num_workers)(**common).fit()
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
        set_result_if(s, spec.result_id, [ResultStatus.TRAINING], **fields)
    store.dispose()


def cancel_runs(timeout: float = 60.0) -> None:
    """Stop the Ray Train runs this process started, as Ctrl-C would.

    ``ray.cancel`` interrupts each training task; Ray Train's interrupt handler aborts its
    run, which removes the run's workers and placement group. Killing the task's process
    instead leaves the placement group (and its CPUs) reserved until the Ray job that
    started the runner ends, since a placement group outlives its creator inside a job.
    """
    import ray

    _stopping.set()
    refs = list(_running)
    for ref in refs:
        ray.cancel(ref)
    if refs:
        ray.wait(refs, num_returns=len(refs), timeout=timeout)


def fail_results(
    store: Store, deployment_id: int, error: str, status: ResultStatus = ResultStatus.FAILED
) -> None:
    """Give every unfinished result of a deployment ``status`` and ``error``."""
    with store.session() as s:
        dep = s.get(TrainingDeployment, deployment_id)
        for r in dep.results if dep else []:
            running = [ResultStatus.WAITING, ResultStatus.TRAINING]
            set_result_if(s, r.id, running, status=status, error=error)


def wait_for_datasource(store: Store, deployment_id: int, poll_s: float = 1.0) -> int:
    """Block until the control listener assigns a datasource to the deployment."""
    logger.info("deployment %d: waiting for its data stream", deployment_id)
    while True:
        with store.session() as s:
            dep = s.get(TrainingDeployment, deployment_id)
            if dep is None:
                raise InvalidInput(f"no training deployment with id {deployment_id}")
            if dep.datasource_id is not None:
                return dep.datasource_id
            if all(r.status.done for r in dep.results):
                raise InvalidInput(f"deployment {deployment_id} was stopped before data came")
        time.sleep(poll_s)


def run_deployment(
    settings: Settings, deployment_id: int, datasource_id: int | None = None
) -> None:
    """Read the datasource once, split it, and train every waiting model in parallel."""
    import ray

    store = Store.for_url(settings.db_url)
    if datasource_id is None:
        datasource_id = wait_for_datasource(store, deployment_id)
    with store.session() as s:
        dep = s.get_one(TrainingDeployment, deployment_id)
        ds = s.get_one(Datasource, datasource_id)
        waiting = [r for r in dep.results if r.status == ResultStatus.WAITING]
        for r in waiting:
            r.status, r.error = ResultStatus.TRAINING, None
            r.progress = {"phase": "reading the data stream"}
            fw = r.model.framework
            params = params_for(dep.kwargs, fw, dep.batch_size)
            r.lineage = r.lineage or record(  # (a resumed online result keeps its record)
                ds, model=r.model, version=r.model_version, params=params,
                on_malformed=dep.on_malformed, shuffle_seed=dep.shuffle_seed, deployment=dep,
                reproduction_of=r.reproduction_of,
            )  # fmt: skip
        specs = [
            RunSpec(
                result_id=r.id,
                model_name=r.model.name,
                framework=(trained := TrainedModel.of(r)).framework,
                code=trained.code,  # (the version it was deployed with)
                imports=trained.imports,
                batch_size=dep.batch_size,
                settings=settings,
                train_args=dict(dep.kwargs.get(r.model.framework, {}).get("train", {})),
                val_args=dict(dep.kwargs.get(r.model.framework, {}).get("val", {})),
                confusion_matrix=dep.confusion_matrix,
                gpu_fraction=dep.gpu_fraction,
                input_shape=trained.input_shape,
                lineage=r.lineage,
            )
            for r in waiting
        ]
        announced = (
            ds.source_timestamp / 1000
            if ds.source_timestamp
            else ds.created_at.replace(tzinfo=UTC).timestamp()
        )
        fmt, cfg = ds.input_format, dict(ds.input_config)
        rates = (ds.validation_rate, ds.test_rate)
        seed, on_malformed = dep.shuffle_seed, dep.on_malformed
        online = ds.message.get("incremental") is True
        if online:
            topics, starts = parse_sources(ds.topic)
            source = {
                "topics": topics,
                "starts": [(r.topic, r.partition, r.start) for r in starts],
                "since_ms": ds.source_timestamp or 0,
                "validation_rate": ds.validation_rate,
            }
            options = OnlineOptions(**(dep.online or {}))
        else:
            ranges = parse_ranges(ds.topic)
    if not specs:
        logger.info("deployment %d has no waiting models", deployment_id)
        return
    gpus = ray.cluster_resources().get("GPU", 0)
    if specs[0].gpu_fraction > gpus:
        fail_results(
            store,
            deployment_id,
            f"each model asks for {specs[0].gpu_fraction} GPU, but "
            f"the Ray cluster has {gpus:g} GPUs",
        )
        return

    if online:
        _run_online(store, specs, source, options, fmt, cfg, on_malformed)
        return

    def reading(why: str | None) -> None:
        _set_progress(store, specs, {"phase": "reading the data stream"}, why)

    def mark(phase: str) -> None:
        for spec in specs:
            spec.marks[phase] = time.time()

    for spec in specs:
        spec.marks["announced"] = announced
    mark("read")
    try:
        data = read_ranges(settings.kafka_config(), ranges, fmt, cfg, on_malformed, waiting=reading)
    except (ReadError, InvalidInput) as e:
        with store.session() as s:
            row = s.get_one(Datasource, datasource_id)
            row.status, row.error = DatasourceStatus.FAILED, str(e)
        fail_results(store, deployment_id, f"reading the data stream failed: {e}")
        return
    with store.session() as s:
        row = s.get_one(Datasource, datasource_id)
        row.malformed_count = data.malformed
        if data.malformed:
            row.error = f"{data.malformed} malformed messages skipped, e.g. " + "; ".join(
                data.errors[:3]
            )
    mark("split")
    train, val, test = split_dataset(data, *rates, shuffle_seed=seed)
    datasets = {"train": train, "val": val, "test": test}
    sizes = dict(zip(("train", "val", "test"), split_sizes(data.count, *rates), strict=True))
    by_result = {spec.result_id: spec for spec in specs}
    with store.session() as s:
        for r in s.get_one(TrainingDeployment, deployment_id).results:
            if r.status == ResultStatus.TRAINING:
                r.progress = {"phase": "starting"}
                lin = dict(r.lineage or {})
                lin["datasource"] = {**lin.get("datasource", {}), "malformed": data.malformed}
                lin["split"] = {**lin.get("split", {}), "sizes": sizes}
                r.lineage = lin
                if r.id in by_result:
                    by_result[r.id].lineage = lin
    mark("start")
    owner = pool.runner_name(settings, deployment_id)
    refs: list[Any] = []
    for spec in specs:
        if _stopping.is_set():  # (a stop while submitting: the rest are not started)
            break
        ref = pool.submit(
            settings,
            owner,
            _train_one,
            _task_options(spec),
            spec.gpu_fraction > 0,
            spec,
            datasets,
            spec.train_args.get("num_workers", 1),
        )
        refs.append(ref)
        _running.append(ref)
    if _stopping.is_set():  # (cancel_runs may have run before the last one was listed)
        for ref in refs:
            ray.cancel(ref)
    specs = specs[: len(refs)]
    pending = list(refs)
    while pending:  # every WAIT_REPORT_S that the runs are not done: what do they wait for?
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_REPORT_S)
        if pending:
            _say_what_runs_wait_for(store, specs, pending)
    for spec, ref in zip(specs, refs, strict=True):  # (the runs record their own errors)
        try:
            ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            pass  # stopped: the stop records it
        except ray.exceptions.RayError as e:  # its process died: say so on its result
            logger.error("result %d: %s", spec.result_id, e)
            with store.session() as s:
                set_result_if(
                    s, spec.result_id, [ResultStatus.TRAINING], status=ResultStatus.FAILED,
                    error=f"the training process died: {error_text(e)}",
                )  # fmt: skip
    logger.info("deployment %d: done", deployment_id)


def _run_online(
    store: Store,
    specs: list[RunSpec],
    source: dict[str, Any],
    options: OnlineOptions,
    fmt: str,
    cfg: dict[str, Any],
    on_malformed: str,
) -> None:
    """One online run per model, each a Ray task holding 1 CPU (and its GPU fraction) for as
    long as it trains. A task whose process dies is run again, and resumes from its
    checkpoint; a stop cancels it (a cancelled task is not run again)."""
    import ray

    from kafkaml_ray.train.online import online_task

    task = ray.remote(num_cpus=1, max_retries=3, retry_exceptions=False, max_calls=1)(online_task)
    refs = [
        task.options(num_gpus=spec.gpu_fraction, name=f"online-result-{spec.result_id}").remote(
            spec, source, options, fmt, cfg, on_malformed
        )
        for spec in specs
    ]
    _running.extend(refs)
    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_REPORT_S)
        if pending:
            _say_what_runs_wait_for(store, specs, pending)
    ray.get(refs)


#: How often a run that has not started training says what it waits for (seconds).
WAIT_REPORT_S = 5.0


def _say_what_runs_wait_for(store: Store, specs: list[RunSpec], pending: list) -> None:
    """Runs that have not started training yet and cannot be placed (their task, ``pending``,
    or their workers' placement group) say on their result what they need, what is free and
    who holds it (``progress["waiting"]``)."""
    from kafkaml_ray._private.rayutil import placement_pending, resource_wait, unplaced

    def idle(r: TrainingResult | None) -> bool:
        started = "epoch" in r.progress or "window" in r.progress if r is not None else True
        return r is not None and r.status == ResultStatus.TRAINING and not started

    with store.session() as s:
        waiting = [sp for sp in specs if idle(s.get(TrainingResult, sp.result_id))]
    if not waiting:
        return
    try:  # (runs whose tasks or workers are placed and starting wait for nothing)
        blocked = unplaced(pending) or placement_pending()
    except Exception:  # noqa: BLE001 - a report, never a reason to fail the run
        logger.exception("what the runs wait for")
        return
    for sp in waiting:
        workers = sp.train_args.get("num_workers", 1)
        need = {"CPU": float(workers), "GPU": sp.gpu_fraction * workers}
        try:
            why = resource_wait(need) if blocked else None
        except Exception:  # noqa: BLE001 - a report, never a reason to fail the run
            logger.exception("result %d: what it waits for", sp.result_id)
            continue
        with store.session() as s:
            r = s.get(TrainingResult, sp.result_id)
            if not idle(r):
                continue
            if why:
                r.progress = {"phase": "waiting for Ray resources", "waiting": why}
                logger.warning("result %d: %s", sp.result_id, why)
            elif "waiting" in r.progress:
                r.progress = {"phase": "starting"}


def _set_progress(store: Store, specs: list[RunSpec], progress: dict, why: str | None) -> None:
    """``progress`` on the deployment's training results, with what they wait for."""
    if why:
        logger.warning("%s", why)
    with store.session() as s:
        for sp in specs:
            r = s.get(TrainingResult, sp.result_id)
            if r is not None and r.status == ResultStatus.TRAINING:
                r.progress = {**progress, **({"waiting": why} if why else {})}
