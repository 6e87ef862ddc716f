"""Training deployments: deploy a configuration to wait for its data stream, follow, stop,
resume an online result, reproduce a result."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from kafkaml_ray import frameworks
from kafkaml_ray.api.base import Ref, Service, find, flush, get_row, wait_done
from kafkaml_ray.errors import Conflict, InvalidInput
from kafkaml_ray.ingest.control import send_control
from kafkaml_ray.model_code import model_version
from kafkaml_ray.options import OnlineOptions, TrainingOptions, checked
from kafkaml_ray.schemas import DeploymentInfo, ResultInfo
from kafkaml_ray.store import (
    Configuration,
    Datasource,
    MLModel,
    ResultStatus,
    TrainingDeployment,
    TrainingResult,
    move_result,
)

__all__ = ["Training"]


class Training(Service):
    """Training deployments and their runs."""

    def deploy(
        self,
        configuration: Ref,
        kwargs: Mapping[str, str | Mapping[str, Any]] | str | None = None,
        val_kwargs: Mapping[str, str | Mapping[str, Any]] | str | None = None,
        submit: bool = False,
        online: OnlineOptions | Mapping[str, Any] | bool | None = None,
        **options: Any,
    ) -> DeploymentInfo:
        """Deploy a configuration for training: one result per model, waiting for data.

        ``kwargs``/``val_kwargs``: per framework (``{"pytorch": "epochs=5", "tensorflow":
        "epochs=5, lr=0.001"}``) or one text for every framework; parsed safely, never evaluated.
        ``submit``: run it as a Ray job now, waiting for its data stream. ``options`` are
        `~kafkaml_ray.options.TrainingOptions`: ``batch_size``, ``gpu_fraction`` (GPU per
        model, e.g. 0.25), ``confusion_matrix``, ``shuffle_seed`` (shuffled split, else
        ordered: test newest), ``on_malformed`` ("fail", or "skip" and count bad messages).
        ``online``: how it trains when its stream is an online one (a control message with
        ``"incremental": true``): `~kafkaml_ray.options.OnlineOptions` or their fields
        (``True``: the defaults, which an online stream also gets without them).
        """
        from kafkaml_ray.train.kwargs import parse_kwargs

        training: TrainingOptions = checked(TrainingOptions, **options)
        if isinstance(online, bool):
            online = OnlineOptions() if online else None
        elif isinstance(online, Mapping):
            online = checked(OnlineOptions, **online)

        def per_framework(value, kind) -> dict[str, dict[str, Any]]:
            if value is None or isinstance(value, str):
                value = dict.fromkeys(frameworks.names(), value)
            unknown = set(value) - set(frameworks.names())
            if unknown:
                raise InvalidInput(f"unknown framework {sorted(unknown)[0]!r} in {kind} kwargs")
            return {fw: parse_kwargs(value.get(fw), kind) for fw in frameworks.names()}

        train, val = per_framework(kwargs, "train"), per_framework(val_kwargs, "val")
        self._check_cluster()
        with self.store.session() as s:
            config = find(s, Configuration, configuration, "configuration")
            if not config.models:
                raise InvalidInput(f"configuration {config.name!r} has no models")
            for m in config.models:
                _check_workers(m, train[m.framework].get("num_workers", 1))
            dep = TrainingDeployment(
                configuration=config,
                **training.model_dump(),
                online=online.model_dump() if online is not None else None,
                kwargs={fw: {"train": train[fw], "val": val[fw]} for fw in frameworks.names()},
            )
            s.add(dep)
            s.flush()
            for m in config.models:
                version = model_version(s, m)
                if online is not None:
                    _check_monitored(m.name, version.metrics, online.monitoring_metric)
                s.add(TrainingResult(deployment=dep, model=m, model_version=version))
            dep_id = dep.id
        if submit:
            from kafkaml_ray.train.submit import submit_training

            job_id = submit_training(self.settings, dep_id)
            with self.store.session() as s:
                s.get_one(TrainingDeployment, dep_id).job_id = job_id
        return self.get(dep_id)

    def list(self) -> list[DeploymentInfo]:
        with self.store.session() as s:
            rows = s.scalars(select(TrainingDeployment).order_by(TrainingDeployment.id))
            return [DeploymentInfo.of(d) for d in rows]

    def get(self, deployment_id: int) -> DeploymentInfo:
        with self.store.session() as s:
            return DeploymentInfo.of(
                get_row(s, TrainingDeployment, deployment_id, "training deployment")
            )

    def wait(self, deployment_id: int, timeout: float = 600) -> DeploymentInfo:
        """Block until every result of the deployment is finished, failed or stopped."""
        return wait_done(lambda: self.get(deployment_id), f"deployment {deployment_id}", timeout)

    def stop(self, deployment_id: int) -> DeploymentInfo:
        """Stop a deployment's training (or its wait for data); frees its Ray resources."""
        from kafkaml_ray.train.launch import stop_runner

        dep = self.get(deployment_id)
        if dep.done:
            return dep
        # Stopped first: a run being stopped writes nothing more.
        with self.store.session() as s:
            for r in s.get_one(TrainingDeployment, deployment_id).results:
                move_result(s, r.id, ResultStatus.STOPPED, error="stopped by the user")
        stop_runner(self.settings, deployment_id, dep.job_id)
        return self.get(deployment_id)

    def resume(self, result_id: int) -> ResultInfo:
        """Train a failed or stopped online result again, from its last checkpoint (weights,
        optimizer and offsets): no window is lost or trained twice."""
        from kafkaml_ray.train import pool
        from kafkaml_ray.train.launch import runner_name, start_runner

        self._check_cluster()
        with self.store.session() as s:
            r = get_row(s, TrainingResult, result_id, "training result")
            dep = r.deployment
            ds = s.get(Datasource, dep.datasource_id) if dep and dep.datasource_id else None
            if ds is None or (ds.message or {}).get("incremental") is not True:
                raise InvalidInput(
                    f"result {result_id} was not trained online: only an online run resumes "
                    "(`result reproduce` trains a batch result again)"
                )
            if r.status not in (ResultStatus.FAILED, ResultStatus.STOPPED):
                raise Conflict(
                    f"result {result_id} is {r.status.value}: only a failed or stopped online "
                    "result resumes"
                )
            dep_id, ds_id = dep.id, ds.id
        if pool.running(self.settings, runner_name(self.settings, dep_id)):
            raise Conflict(
                f"deployment {dep_id} still trains other models online: stop it first "
                f"(kafkaml-ray train stop {dep_id}), then resume its results"
            )
        with self.store.session() as s:
            move_result(
                s, result_id, ResultStatus.WAITING,
                only_from=[ResultStatus.FAILED, ResultStatus.STOPPED], error=None,
                progress={"phase": "resuming from its checkpoint"},
            )  # fmt: skip
        start_runner(self.settings, dep_id, ds_id)
        return self.client.results.get(result_id)

    def reproduce(self, result_id: int) -> DeploymentInfo:
        """Train a result again: its model code version, with its parameters, on its
        datasource (the control message is re-sent). Returns the new deployment, whose one
        result names the first as the one it reproduces (``reproduction_of``); it trains
        when the control listener hands it the stream (`wait_for_deployment`)."""
        self._check_cluster()
        lin = self.client.results.get(result_id).lineage
        if lin is None:
            raise InvalidInput(
                f"result {result_id} has no lineage record (its run never started, or it "
                "was stored before lineage was recorded): nothing to reproduce from"
            )
        if lin.datasource.incremental:
            raise InvalidInput(
                f"result {result_id} was trained online: an online run is not reproduced "
                "(its stream has no end); deploy it again on its topic instead"
            )
        ds = self.client.datasources.resendable(lin.datasource.id)
        with self.store.session() as s:
            r = get_row(s, TrainingResult, result_id, "training result")
            params, fw = dict(lin.params), r.model.framework
            batch_size = int(params.pop("batch_size", 32))
            old = r.deployment
            config = old.configuration if old else _configuration_of(s, r.model)
            kwargs = {f: {"train": {}, "val": {}} for f in frameworks.names()}
            kwargs[fw] = {"train": params, "val": dict(lin.val_params)}
            dep = TrainingDeployment(
                configuration=config,
                batch_size=batch_size,
                kwargs=kwargs,
                gpu_fraction=old.gpu_fraction if old else 0.0,
                confusion_matrix=old.confusion_matrix if old else True,
                shuffle_seed=lin.split.shuffle_seed,
                on_malformed=lin.split.on_malformed,
            )
            s.add(dep)
            s.add(
                TrainingResult(
                    deployment=dep, model=r.model, model_version=r.model_version,
                    reproduction_of=r.id,
                )
            )  # fmt: skip
            s.flush()
            dep_id = dep.id
        send_control(self.settings, ds.message, dep_id)
        return self.get(dep_id)


def _check_workers(model: MLModel, workers: int) -> None:
    """Refuse more data-parallel workers than a model's framework trains on."""
    most = frameworks.get(model.framework).max_workers
    if most is not None and workers > most:
        raise InvalidInput(
            f"num_workers={workers} for {frameworks.get(model.framework).label} model "
            f"{model.name!r}: it trains on at most {most} worker(s); give the other "
            'frameworks\' models their own kwargs, e.g. {"pytorch": "num_workers=2"}'
        )


def _check_monitored(model: str, reported: list[str] | None, metric: str) -> None:
    """Refuse an online deployment whose ``monitoring_metric`` a model does not report: no
    version would ever be published (``reported`` None: not known until it trains, and
    the run itself refuses it at its first window)."""
    if reported is not None and metric not in reported:
        raise InvalidInput(
            f"monitoring_metric {metric!r}: model {model!r} reports "
            f"{', '.join(reported) or 'no metrics'}; no version would ever be published"
        )


def _configuration_of(s, model: MLModel) -> Configuration:
    """A configuration of ``model`` alone (reproducing a Tune trial, which has none): the
    first one there is, else a new one named for it."""
    for config in model.configurations:
        if [m.id for m in config.models] == [model.id]:
            return config
    config = Configuration(name=f"{model.name} (reproductions)", models=[model])
    s.add(config)
    flush(s, f"a configuration named {config.name!r} exists with other models: rename it")
    return config
