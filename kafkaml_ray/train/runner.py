"""Running a training deployment: read its datasource once, split it, and train every model
of its configuration in parallel, each as its own Ray Train run in a Ray task of its own.
A run of one worker (the default) trains in that task, which holds its CPU and GPU share
(Ray Train's local mode); a PyTorch run of several workers is a Ray Train worker group
with a torch process group, started by that task.

`run_deployment` is the one entry point, called by the deployment's runner task (started by
the control listener through `kafkaml_ray.train.launch`) or by a Ray job
(``python -m kafkaml_ray.train``; what ``train deploy --submit`` and a KubeRay RayJob run).
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from datetime import UTC
from typing import Any

from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.frameworks import TrainedModel
from kafkaml_ray.ingest.control import parse_ranges, parse_sources
from kafkaml_ray.ingest.dataset import ReadError, read_ranges, split_dataset, split_sizes
from kafkaml_ray.lineage import params_for, record
from kafkaml_ray.lineage_record import Lineage
from kafkaml_ray.options import OnlineOptions
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import (
    Datasource,
    DatasourceStatus,
    ResultStatus,
    Store,
    TrainingDeployment,
    TrainingResult,
    move_result,
)
from kafkaml_ray.train import pool
from kafkaml_ray.train.reporter import RunSpec, error_text
from kafkaml_ray.train.task import task_options, train_one

__all__ = ["run_deployment", "wait_for_datasource", "fail_results", "cancel_runs"]

logger = logging.getLogger(__name__)

# The training tasks of the `run_deployment` running in this process, for `cancel_runs`.
_running: list[Any] = []


def cancel_runs(timeout: float = 60.0) -> None:
    """Stop the training runs this process started (the runner task, when a stop cancels
    it), as Ctrl-C would, and wait up to ``timeout`` s for them to end.

    ``ray.cancel`` interrupts each training task; Ray Train's interrupt handler aborts its
    run, which removes the run's workers and placement group. Killing the task's process
    instead leaves the placement group (and its CPUs) reserved until the Ray job that
    started the runner ends, since a placement group outlives its creator inside a job.
    """
    import ray

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
            move_result(s, r.id, status, error=error)


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


@dataclass
class _Claim:
    """What one store session found and claimed for a deployment's run: its waiting results
    (now training, each with its lineage and `RunSpec`), and how to read its datasource."""

    specs: list[RunSpec]
    announced: float  # when the control message came (seconds since the epoch)
    fmt: str
    config: dict[str, Any]
    rates: tuple[float, float]  # validation, test
    seed: int | None
    on_malformed: str
    ranges: Any = None  # a batch stream's Kafka ranges
    source: dict[str, Any] | None = None  # an online stream's topics and starts
    online: OnlineOptions | None = None


def run_deployment(
    settings: Settings, deployment_id: int, datasource_id: int | None = None
) -> None:
    """Read the datasource once, split it, and train every waiting model in parallel, in
    named steps: claim (one session), read, split, launch, await."""
    import ray

    _running.clear()  # (a warm process ran other deployments before)
    store = Store.for_url(settings.db_url)
    if datasource_id is None:
        datasource_id = wait_for_datasource(store, deployment_id)
    claim = _claim(store, settings, deployment_id, datasource_id)
    specs = claim.specs
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
    if claim.online is not None:
        _run_online(
            store, specs, claim.source, claim.online, claim.fmt, claim.config, claim.on_malformed
        )
        return
    for spec in specs:
        spec.marks["announced"] = claim.announced
    data = _read(store, settings, deployment_id, datasource_id, claim)
    if data is None:
        return
    datasets = _split(store, deployment_id, claim, data)
    refs = _launch(settings, deployment_id, specs, datasets)
    _await(store, specs[: len(refs)], refs)
    logger.info("deployment %d: done", deployment_id)


def _mark(specs: list[RunSpec], phase: str) -> None:
    for spec in specs:
        spec.marks[phase] = time.time()


def _claim(store: Store, settings: Settings, deployment_id: int, datasource_id: int) -> _Claim:
    """In one session: the deployment's waiting results marked training, with their lineage
    recorded (a resumed online result keeps its record), and what their runs need."""
    with store.session() as s:
        dep = s.get_one(TrainingDeployment, deployment_id)
        ds = s.get_one(Datasource, datasource_id)
        specs = []
        for r in (r for r in dep.results if r.status == ResultStatus.WAITING):
            params = params_for(dep.kwargs, r.model.framework, dep.batch_size)
            lineage = Lineage.of(r.lineage) or record(
                ds, model=r.model, version=r.model_version, params=params,
                on_malformed=dep.on_malformed, shuffle_seed=dep.shuffle_seed, deployment=dep,
                reproduction_of=r.reproduction_of,
            )  # fmt: skip
            if move_result(
                s, r.id, ResultStatus.TRAINING, error=None, lineage=lineage.as_json(),
                progress={"phase": "reading the data stream"},
            ):  # fmt: skip
                specs.append(_spec(settings, dep, r, lineage))
        claim = _Claim(
            specs=specs,
            announced=(
                ds.source_timestamp / 1000
                if ds.source_timestamp
                else ds.created_at.replace(tzinfo=UTC).timestamp()
            ),
            fmt=ds.input_format,
            config=dict(ds.input_config),
            rates=(ds.validation_rate, ds.test_rate),
            seed=dep.shuffle_seed,
            on_malformed=dep.on_malformed,
        )
        if ds.message.get("incremental") is True:
            topics, starts = parse_sources(ds.topic)
            claim.source = {
                "topics": topics,
                "starts": [(r.topic, r.partition, r.start) for r in starts],
                "since_ms": ds.source_timestamp or 0,
                "validation_rate": ds.validation_rate,
            }
            claim.online = OnlineOptions(**(dep.online or {}))
        else:
            claim.ranges = parse_ranges(ds.topic)
        return claim


def _spec(
    settings: Settings, dep: TrainingDeployment, r: TrainingResult, lineage: Lineage
) -> RunSpec:
    """A waiting result's run: the code version it was deployed with, its framework's kwargs."""
    trained = TrainedModel.of(r)
    kwargs = dep.kwargs.get(r.model.framework, {})
    return RunSpec(
        result_id=r.id,
        model_name=r.model.name,
        framework=trained.framework,
        code=trained.code,
        imports=trained.imports,
        batch_size=dep.batch_size,
        settings=settings,
        train_args=dict(kwargs.get("train", {})),
        val_args=dict(kwargs.get("val", {})),
        confusion_matrix=dep.confusion_matrix,
        gpu_fraction=dep.gpu_fraction,
        input_shape=trained.input_shape,
        lineage=lineage,
    )


def _read(
    store: Store, settings: Settings, deployment_id: int, datasource_id: int, claim: _Claim
) -> Any:
    """The stream's ranges read into a Ray Dataset (its malformed messages counted on the
    datasource), or None when the read failed (the datasource and the results say why)."""
    specs = claim.specs

    def reading(why: str | None) -> None:
        _set_progress(store, specs, {"phase": "reading the data stream"}, why)

    _mark(specs, "read")
    try:
        data = read_ranges(
            settings.kafka_config(), claim.ranges, claim.fmt, claim.config, claim.on_malformed,
            waiting=reading,
        )  # fmt: skip
    except (ReadError, InvalidInput) as e:
        with store.session() as s:
            row = s.get_one(Datasource, datasource_id)
            row.status, row.error = DatasourceStatus.FAILED, str(e)
        fail_results(store, deployment_id, f"reading the data stream failed: {e}")
        return None
    with store.session() as s:
        row = s.get_one(Datasource, datasource_id)
        row.malformed_count = data.malformed
        if data.malformed:
            row.error = f"{data.malformed} malformed messages skipped, e.g. " + "; ".join(
                data.errors[:3]
            )
    return data


def _split(store: Store, deployment_id: int, claim: _Claim, data: Any) -> dict[str, Any]:
    """The data split train/val/test; each training result's lineage records the sizes."""
    _mark(claim.specs, "split")
    train, val, test = split_dataset(data, *claim.rates, shuffle_seed=claim.seed)
    sizes = dict(zip(("train", "val", "test"), split_sizes(data.count, *claim.rates), strict=True))
    by_result = {spec.result_id: spec for spec in claim.specs}
    with store.session() as s:
        for r in s.get_one(TrainingDeployment, deployment_id).results:
            if r.status == ResultStatus.TRAINING:
                r.progress = {"phase": "starting"}
                if (lin := Lineage.of(r.lineage)) is None:
                    continue
                lin = lin.with_split(sizes=sizes, malformed=data.malformed)
                r.lineage = lin.as_json()
                if r.id in by_result:
                    by_result[r.id].lineage = lin
    return {"train": train, "val": val, "test": test}


def _launch(
    settings: Settings, deployment_id: int, specs: list[RunSpec], datasets: dict[str, Any]
) -> list[Any]:
    """One training task per model, submitted to the training pool (none after a stop: the
    pool refuses them)."""
    _mark(specs, "start")
    owner = pool.runner_name(settings, deployment_id)
    refs: list[Any] = []
    for spec in specs:
        ref = pool.submit(
            settings,
            owner,
            train_one,
            task_options(spec),
            spec.gpu_fraction > 0,
            spec,
            datasets,
            spec.train_args.get("num_workers", 1),
        )
        if ref is None:  # (stopped while submitting: the rest are not started)
            break
        refs.append(ref)
        _running.append(ref)
    return refs


def _await(store: Store, specs: list[RunSpec], refs: list[Any]) -> None:
    """Until every run ends, saying every WAIT_REPORT_S what the waiting ones wait for; a
    run whose process died is failed with the reason (the others record their own end)."""
    import ray

    pending = list(refs)
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=WAIT_REPORT_S)
        if pending:
            _say_what_runs_wait_for(store, specs, pending)
    for spec, ref in zip(specs, refs, strict=True):
        try:
            ray.get(ref)
        except ray.exceptions.TaskCancelledError:
            pass  # stopped: the stop records it
        except ray.exceptions.RayError as e:  # its process died: say so on its result
            logger.error("result %d: %s", spec.result_id, e)
            with store.session() as s:
                move_result(
                    s, spec.result_id, ResultStatus.FAILED, only_from=[ResultStatus.TRAINING],
                    error=f"the training process died: {error_text(e)}",
                )  # fmt: skip


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
