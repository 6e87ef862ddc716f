"""The Python API: every action of the CLI and the control panel goes through `Client`.

Kept whole: it is one class, the library's whole public surface, and each method is thin
(check the input, one store transaction, hand the work to `train`, `serve` or `ingest`).
Read top to bottom it follows a user's path: models, configurations, training, results,
datasources, inference, tuning. Split across files, one surface would be read in several.

>>> from kafkaml_ray import Client, Settings
>>> client = Client(Settings(home="/tmp/kml-doctest", db="sqlite://"))
>>> client.list_models()
[]
"""

from __future__ import annotations

import json
import logging
import re
import time
from collections.abc import Mapping, Sequence
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kafkaml_ray import frameworks
from kafkaml_ray.errors import Conflict, InvalidInput, NotFound
from kafkaml_ray.options import OnlineOptions, ServingOptions, TrainingOptions, checked
from kafkaml_ray.registry import model_version, validate_model
from kafkaml_ray.results import ResultFilter
from kafkaml_ray.schemas import (
    ConfigurationInfo,
    DatasourceInfo,
    DeploymentInfo,
    InferenceInfo,
    LineageInfo,
    ModelInfo,
    ModelVersionInfo,
    Prediction,
    ResultInfo,
    TuneInfo,
    VersionInfo,
    WindowInfo,
)
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import (
    Configuration,
    Datasource,
    DatasourceStatus,
    Inference,
    InferenceStatus,
    MLModel,
    ModelVersion,
    OnlineWindow,
    ReplicaStats,
    ResultStatus,
    ResultVersion,
    Store,
    TrainingDeployment,
    TrainingResult,
    TuneRun,
    set_result_if,
)

__all__ = ["Client"]

logger = logging.getLogger(__name__)

Ref = int | str  # an id, or a name


class Client:
    """Models, configurations and (in later sections) training, datasources and inference."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None):
        self.settings = settings or Settings.from_env()
        self.store = store or Store.for_url(self.settings.db_url)

    def _check_cluster(self) -> None:
        """Before starting work: refuse a Ray cluster of several nodes with a SQLite store or
        local artifacts (`~kafkaml_ray._private.rayutil.check_shared_state`)."""
        from kafkaml_ray._private.rayutil import check_shared_state

        check_shared_state(self.settings)

    # -- models ------------------------------------------------------------------------
    def add_model(
        self, name: str, framework: str, code: str, imports: str = "", description: str = ""
    ) -> ModelInfo:
        """Validate model code in a Ray worker, then register it; nothing is stored if it
        does not build (:class:`~kafkaml_ray.errors.ModelCodeError`)."""
        name = _name(name, "model")
        frameworks.get(framework)  # (an unknown one is refused before anything else)
        with self.store.session() as s:
            if s.scalar(select(MLModel.id).where(MLModel.name == name)) is not None:
                raise Conflict(f"a model named {name!r} exists already")
        found = validate_model(framework, code, imports, self.settings)
        row = MLModel(
            name=name,
            framework=framework,
            code=code,
            imports=imports,
            description=description,
            **found,
        )
        with self.store.session() as s:
            s.add(row)
            _flush(s, f"a model named {name!r} exists already")
            return ModelInfo.model_validate(row)

    def update_model(
        self,
        ref: Ref,
        *,
        name: str | None = None,
        code: str | None = None,
        imports: str | None = None,
        description: str | None = None,
    ) -> ModelInfo:
        """Change a model; new code is validated first, as in `add_model`."""
        current = self.get_model(ref)
        found = {}
        if code is not None or imports is not None:
            found = validate_model(
                current.framework,
                current.code if code is None else code,
                current.imports if imports is None else imports,
                self.settings,
            )
        with self.store.session() as s:
            row = s.get_one(MLModel, current.id)
            if name is not None:
                row.name = _name(name, "model")
            for field, value in (
                ("code", code),
                ("imports", imports),
                ("description", description),
            ):
                if value is not None:
                    setattr(row, field, value)
            for field, value in found.items():
                setattr(row, field, value)
            _flush(s, f"a model named {name!r} exists already")
            return ModelInfo.model_validate(row)

    def list_models(self) -> list[ModelInfo]:
        with self.store.session() as s:
            return [
                ModelInfo.model_validate(m) for m in s.scalars(select(MLModel).order_by(MLModel.id))
            ]

    def get_model(self, ref: Ref) -> ModelInfo:
        with self.store.session() as s:
            return ModelInfo.model_validate(_find(s, MLModel, ref, "model"))

    def list_model_versions(self, ref: Ref) -> list[ModelVersionInfo]:
        """Every version of a model's code that a result trained (or will train) with,
        oldest first; updating a model's code adds one when it is next deployed."""
        with self.store.session() as s:
            m = _find(s, MLModel, ref, "model")
            mine = select(ModelVersion).where(ModelVersion.model_id == m.id)
            rows = s.scalars(mine.order_by(ModelVersion.number))
            return [ModelVersionInfo.model_validate(v) for v in rows]

    def get_model_version(self, ref: Ref, number: int) -> ModelVersionInfo:
        """Version ``number`` of a model's code (a result's ``model_version``)."""
        for v in self.list_model_versions(ref):
            if v.number == number:
                return v
        raise NotFound(f"model {ref!r} has no version {number}")

    def delete_model(self, ref: Ref) -> None:
        """Delete a model; refused while a configuration uses it."""
        with self.store.session() as s:
            row = _find(s, MLModel, ref, "model")
            if row.configurations:
                names = ", ".join(repr(c.name) for c in row.configurations)
                raise Conflict(
                    f"model {row.name!r} is used by configuration {names}: delete or change "
                    "the configuration first"
                )
            s.delete(row)

    # -- configurations ----------------------------------------------------------------
    def create_configuration(
        self, name: str, models: Sequence[Ref], description: str = ""
    ) -> ConfigurationInfo:
        """Group registered models (of any framework) to train them together."""
        name = _name(name, "configuration")
        with self.store.session() as s:
            rows = _models(s, models)
            config = Configuration(name=name, description=description, models=rows)
            s.add(config)
            _flush(s, f"a configuration named {name!r} exists already")
            return ConfigurationInfo.of(config)

    def update_configuration(
        self,
        ref: Ref,
        *,
        name: str | None = None,
        models: Sequence[Ref] | None = None,
        description: str | None = None,
    ) -> ConfigurationInfo:
        with self.store.session() as s:
            config = _find(s, Configuration, ref, "configuration")
            if name is not None:
                config.name = _name(name, "configuration")
            if description is not None:
                config.description = description
            if models is not None:
                config.models = _models(s, models)
            _flush(s, f"a configuration named {name!r} exists already")
            return ConfigurationInfo.of(config)

    def list_configurations(self) -> list[ConfigurationInfo]:
        with self.store.session() as s:
            rows = s.scalars(select(Configuration).order_by(Configuration.id))
            return [ConfigurationInfo.of(c) for c in rows]

    def get_configuration(self, ref: Ref) -> ConfigurationInfo:
        with self.store.session() as s:
            return ConfigurationInfo.of(_find(s, Configuration, ref, "configuration"))

    def delete_configuration(self, ref: Ref) -> None:
        with self.store.session() as s:
            s.delete(_find(s, Configuration, ref, "configuration"))

    # -- training ----------------------------------------------------------------------
    def deploy_training(
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
        "epochs=5, lr=0.001"}``) or one text for both; parsed safely, never evaluated.
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
            config = _find(s, Configuration, configuration, "configuration")
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
        return self.get_deployment(dep_id)

    def list_deployments(self) -> list[DeploymentInfo]:
        with self.store.session() as s:
            rows = s.scalars(select(TrainingDeployment).order_by(TrainingDeployment.id))
            return [DeploymentInfo.of(d) for d in rows]

    def get_deployment(self, deployment_id: int) -> DeploymentInfo:
        with self.store.session() as s:
            return DeploymentInfo.of(
                _get(s, TrainingDeployment, deployment_id, "training deployment")
            )

    def wait_for_deployment(self, deployment_id: int, timeout: float = 600) -> DeploymentInfo:
        """Block until every result of the deployment is finished, failed or stopped."""
        deadline = time.monotonic() + timeout
        while True:
            dep = self.get_deployment(deployment_id)
            if dep.done:
                return dep
            if time.monotonic() > deadline:
                raise TimeoutError(f"deployment {deployment_id} is not done after {timeout:.0f}s")
            time.sleep(1.0)

    def stop_training(self, deployment_id: int) -> DeploymentInfo:
        """Stop a deployment's training (or its wait for data); frees its Ray resources."""
        from kafkaml_ray.train.launch import stop_runner

        dep = self.get_deployment(deployment_id)
        if dep.done:
            return dep
        # Stopped first: a run being stopped writes nothing more.
        with self.store.session() as s:
            for r in s.get_one(TrainingDeployment, deployment_id).results:
                running = [ResultStatus.WAITING, ResultStatus.TRAINING]
                set_result_if(
                    s, r.id, running, status=ResultStatus.STOPPED, error="stopped by the user"
                )
        stop_runner(self.settings, deployment_id, dep.job_id)
        return self.get_deployment(deployment_id)

    def resume_training(self, result_id: int) -> ResultInfo:
        """Train a failed or stopped online result again, from its last checkpoint (weights,
        optimizer and offsets): no window is lost or trained twice."""
        from kafkaml_ray._private.rayutil import find_actor
        from kafkaml_ray.train.launch import runner_name, start_runner

        self._check_cluster()
        with self.store.session() as s:
            r = _get(s, TrainingResult, result_id, "training result")
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
        if find_actor(self.settings, runner_name(self.settings, dep_id)) is not None:
            raise Conflict(
                f"deployment {dep_id} still trains other models online: stop it first "
                f"(kafkaml-ray train stop {dep_id}), then resume its results"
            )
        with self.store.session() as s:
            resumable = [ResultStatus.FAILED, ResultStatus.STOPPED]
            progress = {"phase": "resuming from its checkpoint"}
            set_result_if(s, result_id, resumable, status=ResultStatus.WAITING, error=None,
                          progress=progress)  # fmt: skip
        start_runner(self.settings, dep_id, ds_id)
        return self.get_result(result_id)

    def list_results(self, deployment_id: int | None = None, **filters: Any) -> list[ResultInfo]:
        """The results, oldest first, that match every one of ``filters``
        (`~kafkaml_ray.results.ResultFilter`: ``datasource_id``, ``topic``, ``model``,
        ``code_version``, ``framework``, ``status``, ``params={"lr": 0.01}``,
        ``metrics={"test_accuracy": (0.9, None)}``, ``tag``, ``text``, ``tune_id``)."""
        wanted: ResultFilter = checked(ResultFilter, deployment_id=deployment_id, **filters)
        with self.store.session() as s:
            q = select(TrainingResult).order_by(TrainingResult.id)
            if deployment_id is not None:
                q = q.where(TrainingResult.deployment_id == deployment_id)
            infos = (ResultInfo.of(r) for r in s.scalars(q))
            return [r for r in infos if wanted.matches(r)]

    def tag_result(self, result_id: int, *tags: str, remove: bool = False) -> ResultInfo:
        """Add ``tags`` to a result (or ``remove`` them); `list_results` finds results by tag."""
        for tag in tags:
            if not isinstance(tag, str) or not re.fullmatch(r"[\w][\w .:/+-]{0,49}", tag):
                raise InvalidInput(
                    f"tag {tag!r}: 1 to 50 letters, digits, spaces or . : / + - _ "
                    "(starting with a letter, digit or _)"
                )
        with self.store.session() as s:
            row = _get(s, TrainingResult, result_id, "training result")
            old = list(row.tags or [])
            row.tags = (
                [t for t in old if t not in tags] if remove else list(dict.fromkeys(old + [*tags]))
            )
        return self.get_result(result_id)

    def set_result_notes(self, result_id: int, notes: str) -> ResultInfo:
        """Replace a result's notes (free text, up to 10,000 characters)."""
        if not isinstance(notes, str) or len(notes) > 10_000:
            raise InvalidInput("notes must be text of at most 10,000 characters")
        with self.store.session() as s:
            _get(s, TrainingResult, result_id, "training result").notes = notes
        return self.get_result(result_id)

    def lineage(self, result_id: int) -> LineageInfo:
        """A result with everything it links to: its datasource, its deployment or Tune
        search, its published versions, the inferences that served it, its reproductions."""
        from kafkaml_ray.lineage import tree

        with self.store.session() as s:
            return LineageInfo(**tree(s, _get(s, TrainingResult, result_id, "training result")))

    def reproduce(self, result_id: int) -> DeploymentInfo:
        """Train a result again: its model code version, with its parameters, on its
        datasource (the control message is re-sent). Returns the new deployment, whose one
        result names the first as the one it reproduces (``reproduction_of``); it trains
        when the control listener hands it the stream (`wait_for_deployment`)."""
        self._check_cluster()
        lin = self.get_result(result_id).lineage
        if not lin.get("datasource"):
            raise InvalidInput(
                f"result {result_id} has no lineage record (its run never started, or it "
                "was stored before lineage was recorded): nothing to reproduce from"
            )
        if lin["datasource"].get("incremental"):
            raise InvalidInput(
                f"result {result_id} was trained online: an online run is not reproduced "
                "(its stream has no end); deploy it again on its topic instead"
            )
        ds = self._resendable(lin["datasource"]["id"])
        with self.store.session() as s:
            r = _get(s, TrainingResult, result_id, "training result")
            params, fw = dict(lin.get("params") or {}), r.model.framework
            batch_size = int(params.pop("batch_size", 32))
            old = r.deployment
            config = old.configuration if old else _configuration_of(s, r.model)
            kwargs = {f: {"train": {}, "val": {}} for f in frameworks.names()}
            kwargs[fw] = {"train": params, "val": dict(lin.get("val_params") or {})}
            split = lin.get("split") or {}
            dep = TrainingDeployment(
                configuration=config,
                batch_size=batch_size,
                kwargs=kwargs,
                gpu_fraction=old.gpu_fraction if old else 0.0,
                confusion_matrix=old.confusion_matrix if old else True,
                shuffle_seed=split.get("shuffle_seed"),
                on_malformed=split.get("on_malformed") or "fail",
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
        self._send_control(ds, dep_id)
        return self.get_deployment(dep_id)

    def list_online_results(self) -> list[ResultInfo]:
        """The results trained online (with at least one window), oldest first."""
        with self.store.session() as s:
            online = select(OnlineWindow.result_id).distinct()
            q = select(TrainingResult).where(TrainingResult.id.in_(online))
            return [ResultInfo.of(r) for r in s.scalars(q.order_by(TrainingResult.id))]

    def list_windows(self, result_id: int) -> list[WindowInfo]:
        """An online result's windows, oldest first: the learning curve over the stream."""
        with self.store.session() as s:
            _get(s, TrainingResult, result_id, "training result")
            q = select(OnlineWindow).where(OnlineWindow.result_id == result_id)
            return [
                WindowInfo.model_validate(w) for w in s.scalars(q.order_by(OnlineWindow.window))
            ]

    def list_versions(self, result_id: int) -> list[VersionInfo]:
        """An online result's published versions, oldest first."""
        with self.store.session() as s:
            _get(s, TrainingResult, result_id, "training result")
            q = select(ResultVersion).where(ResultVersion.result_id == result_id)
            return [
                VersionInfo.model_validate(v) for v in s.scalars(q.order_by(ResultVersion.version))
            ]

    def get_result(self, result_id: int) -> ResultInfo:
        with self.store.session() as s:
            return ResultInfo.of(_get(s, TrainingResult, result_id, "training result"))

    def delete_result(self, result_id: int) -> None:
        """Delete a result and its artifacts; refused while it trains (stop it first) or
        while an inference serves it (delete that first)."""
        with self.store.session() as s:
            row = _get(s, TrainingResult, result_id, "training result")
            if row.status in (ResultStatus.TRAINING,):
                raise Conflict(f"result {result_id} is training: stop its deployment first")
            _refuse_if_served(s, [result_id])
            s.delete(row)
        self._delete_artifacts([result_id])

    def _delete_artifacts(self, result_ids: list[int]) -> None:
        from kafkaml_ray import artifacts

        for i in result_ids:
            artifacts.delete_tree(artifacts.join(self.settings.artifacts_uri, f"results/{i}"))

    def download_weights(self, result_id: int, version: int | None = None) -> tuple[str, bytes]:
        """The trained weights as ``(file name, bytes)``: safetensors or ``.keras``; of an
        online result, its newest published version or ``version``."""
        from kafkaml_ray import artifacts

        with self.store.session() as s:  # (the URIs as stored: with their credentials)
            r = _get(s, TrainingResult, result_id, "training result")
            uri, status = r.weights_uri, r.status.value
            if version is not None:
                q = select(ResultVersion.weights_uri).where(
                    ResultVersion.result_id == result_id, ResultVersion.version == version
                )
                uri = s.scalar(q)
                if uri is None:
                    raise NotFound(f"result {result_id} has no version {version}")
        if not uri:
            raise NotFound(f"result {result_id} has no weights (status {status})")
        return uri.rsplit("/", 1)[-1], artifacts.get(uri)

    def predict(self, result_id: int, data: Any) -> Any:
        """Predictions of a trained result for a batch of samples (computed in a Ray task)."""
        import ray

        from kafkaml_ray._private.rayutil import ensure_ray

        with self.store.session() as s:
            r = _get(s, TrainingResult, result_id, "training result")
            if not r.weights_uri:
                raise NotFound(f"result {result_id} has no weights (status {r.status})")
            trained = frameworks.TrainedModel.of(r)
        ensure_ray(self.settings)
        self._check_cluster()
        task = ray.remote(num_cpus=1, max_calls=1)(_predict)
        out = ray.get(task.remote(trained, data))
        if isinstance(out, str):
            raise InvalidInput(f"result {result_id} cannot predict this data: {out}")
        import numpy as np

        values, dtype, shape = out
        return np.frombuffer(values, dtype=np.dtype(dtype)).reshape(shape)

    # -- datasources -------------------------------------------------------------------
    def list_datasources(self, check: bool = True) -> list[DatasourceInfo]:
        """The stored control messages; with ``check``, each stream's ``expired`` says
        whether Kafka still holds its data (one quick query per range)."""
        with self.store.session() as s:
            rows = s.scalars(select(Datasource).order_by(Datasource.id))
            infos = [DatasourceInfo.model_validate(d) for d in rows]
        return self._with_expiry(infos) if check else infos

    def get_datasource(self, datasource_id: int, check: bool = True) -> DatasourceInfo:
        with self.store.session() as s:
            info = DatasourceInfo.model_validate(_get(s, Datasource, datasource_id, "datasource"))
        return self._with_expiry([info])[0] if check else info

    def _with_expiry(self, infos: list[DatasourceInfo]) -> list[DatasourceInfo]:
        from kafkaml_ray.ingest.control import parse_ranges
        from kafkaml_ray.ingest.dataset import expired_streams

        streams = {  # (an online stream has no end: nothing to check)
            d.id: parse_ranges(d.topic)
            for d in infos
            if d.status != "refused" and d.topic and not d.message.get("incremental")
        }
        if not streams:
            return infos
        gone = expired_streams(self.settings.kafka_config(), streams)
        return [d.model_copy(update={"expired": gone.get(d.id)}) for d in infos]

    def resend_datasource(self, datasource_id: int, deployment_id: int) -> None:
        """Re-send a stored stream's control message to another deployment: it trains on
        the same Kafka ranges without the data being sent again."""
        ds = self._resendable(datasource_id)
        self.get_deployment(deployment_id)  # exists
        self._send_control(ds, deployment_id)

    def _resendable(self, datasource_id: int) -> DatasourceInfo:
        """The datasource, if its control message can be sent again (not refused, its
        ranges still in Kafka)."""
        ds = self.get_datasource(datasource_id)
        if ds.status == "refused" or not ds.topic:
            raise InvalidInput(f"datasource {datasource_id} was refused: nothing to re-send")
        if ds.expired:
            raise InvalidInput(f"datasource {datasource_id} has expired: {ds.expired}")
        return ds

    def _send_control(self, ds: DatasourceInfo, deployment_id: int) -> None:
        """Send ``ds``'s control message again, naming ``deployment_id``."""
        from confluent_kafka import Producer

        from kafkaml_ray.ingest.control import parse_control

        msg = parse_control(b"\x00", json.dumps(ds.message).encode())
        msg.deployment_id = deployment_id
        key, value, headers = msg.to_kafka()
        producer = Producer(self.settings.kafka_config())
        failures: list[str] = []
        producer.produce(
            self.settings.control_topic,
            value,
            key,
            headers=headers,
            on_delivery=lambda err, _m: err and failures.append(str(err)),
        )
        if producer.flush(30) or failures:
            raise InvalidInput(f"the control message was not delivered: {failures or 'timeout'}")

    # -- inference ---------------------------------------------------------------------
    def deploy_inference(
        self,
        result_id: int,
        input_topic: str,
        output_topic: str,
        input_format: str | None = None,
        input_config: Mapping[str, Any] | None = None,
        autoscaling: Mapping[str, Any] | None = None,
        follow: bool = False,
        version: int | None = None,
        **options: Any,
    ) -> InferenceInfo:
        """Serve a trained result: Kafka ingress replicas read ``input_topic`` (one consumer
        group) and write ``{"values": [...]}`` to ``output_topic``; bad inputs go to
        ``<output_topic>.dlq``. The input format and config default to those of the
        result's data stream. ``options`` are `~kafkaml_ray.options.ServingOptions`
        (``replicas``, ``min_replicas``/``max_replicas`` for lag-driven autoscaling,
        ``gpu_fraction``, ``batch_size``, ``max_wait_ms``); ``autoscaling`` overrides Serve's
        autoscaling settings (e.g. shorter delays).

        An online result serves its newest published version, pinned, or ``version``; with
        ``follow`` the replicas swap to each newer version as it is published (in place: no
        restart, no input left out). Each output names its version in a
        ``kafkaml-model-version`` header."""
        from kafkaml_ray.ingest.formats import get_format
        from kafkaml_ray.serve.spec import unlabelled

        serving: ServingOptions = checked(ServingOptions, **options)
        r = self.get_result(result_id)
        versions = [v.version for v in self.list_versions(result_id)]
        if follow and version is not None:
            raise InvalidInput("follow serves each newest version: give no version with it")
        if (follow or version is not None) and not versions:
            raise InvalidInput(
                f"result {result_id} has no published versions: only an online result's "
                "versions can be followed or chosen"
            )
        if version is not None and version not in versions:
            raise NotFound(f"result {result_id} has no version {version} (it has {versions})")
        if not versions and (r.status != "finished" or not r.weights_uri):
            raise InvalidInput(f"result {result_id} is {r.status}: only a finished result serves")
        if versions and not follow and version is None:
            version = versions[-1]  # pinned: a plain deploy serves what is newest now
        if input_format is None or input_config is None:
            with self.store.session() as s:
                # The stream it trained on: its deployment's, or its Tune search's.
                owner = (
                    s.get(TrainingDeployment, r.deployment_id)
                    if r.deployment_id
                    else (s.get(TuneRun, r.tune_id) if r.tune_id else None)
                )
                ds_id = owner.datasource_id if owner else None
                ds = s.get(Datasource, ds_id) if ds_id else None
                input_format = input_format or (ds.input_format if ds else "RAW")
                if input_config is None:
                    input_config = unlabelled(ds.input_config if ds else {})
        get_format(input_format, input_config)
        for name, topic in (("input_topic", input_topic), ("output_topic", output_topic)):
            if not topic or not all(c.isalnum() or c in "._-" for c in topic):
                raise InvalidInput(f"{name} {topic!r} is not a valid Kafka topic name")
        if input_topic == output_topic:
            raise InvalidInput("input_topic and output_topic must differ")
        self._check_cluster()
        with self.store.session() as s:
            inf = Inference(
                result_id=result_id,
                input_topic=input_topic,
                output_topic=output_topic,
                input_format=input_format.upper(),
                input_config=dict(input_config),
                version=None if follow else version,
                follow=follow,
                **serving.model_dump(),
            )
            s.add(inf)
            s.flush()
            inference_id = inf.id
        self._start_inference(inference_id, autoscaling)
        return self.get_inference(inference_id)

    def _start_inference(self, inference_id: int, autoscaling=None) -> None:
        from kafkaml_ray.serve.deploy import start_inference

        try:
            start_inference(self.settings, inference_id, autoscaling=dict(autoscaling or {}))
        except Exception as e:
            with self.store.session() as s:
                row = s.get_one(Inference, inference_id)
                row.status, row.error = InferenceStatus.FAILED, str(e)
            raise
        with self.store.session() as s:
            row = s.get_one(Inference, inference_id)
            row.status, row.error = InferenceStatus.RUNNING, None

    def list_inferences(self) -> list[InferenceInfo]:
        with self.store.session() as s:
            ids = s.scalars(select(Inference.id).order_by(Inference.id)).all()
        return [self.get_inference(i) for i in ids]

    def get_inference(self, inference_id: int, live: bool = False) -> InferenceInfo:
        """An inference with the figures its ingress replicas reported lately; ``live`` also
        asks Ray Serve whether it wants replicas that Ray cannot place (``waiting``)."""
        info = self._inference_info(inference_id)
        if live and info.status in (InferenceStatus.DEPLOYING, InferenceStatus.RUNNING):
            from kafkaml_ray.serve.deploy import placement_wait

            info = info.model_copy(update={"waiting": placement_wait(self.settings, info.id)})
        return info

    def _inference_info(self, inference_id: int) -> InferenceInfo:
        from datetime import UTC, datetime, timedelta

        with self.store.session() as s:
            inf = _get(s, Inference, inference_id, "inference")
            since = datetime.now(UTC).replace(tzinfo=None) - timedelta(seconds=30)
            stats = s.scalars(select(ReplicaStats).where(ReplicaStats.inference_id == inf.id)).all()
            live = [r for r in stats if r.updated_at >= since]
            fields = {k: getattr(inf, k) for k in InferenceInfo.model_fields if hasattr(inf, k)}
            fields.update(
                status=inf.status.value,
                model_name=inf.result.model.name,
                live_replicas=len(live) if inf.status == InferenceStatus.RUNNING else 0,
                consumed=sum(r.consumed for r in stats),
                predicted=sum(r.predicted for r in stats),
                dead_letters=sum(r.dead_letters for r in stats),
                lag=sum(r.lag for r in live),
                msgs_per_s=sum(r.msgs_per_s for r in live),
            )
            return InferenceInfo(**fields)

    def stop_inference(self, inference_id: int) -> InferenceInfo:
        """Stop serving; the consumer group keeps its committed offsets for a restart."""
        from kafkaml_ray.serve.deploy import stop_inference

        self.get_inference(inference_id)
        stop_inference(self.settings, inference_id)
        with self.store.session() as s:
            s.get_one(Inference, inference_id).status = InferenceStatus.STOPPED
        return self.get_inference(inference_id)

    def restart_inference(self, inference_id: int) -> InferenceInfo:
        """Serve again; it resumes from the consumer group's committed offsets."""
        self.get_inference(inference_id)
        self._start_inference(inference_id)
        return self.get_inference(inference_id)

    def delete_inference(self, inference_id: int) -> None:
        from kafkaml_ray.serve.deploy import stop_inference

        self.get_inference(inference_id)
        stop_inference(self.settings, inference_id)
        with self.store.session() as s:
            s.delete(s.get_one(Inference, inference_id))

    def tap(
        self, inference_id: int, n: int = 20, dead_letters: bool = False, timeout: float = 5.0
    ) -> list[Prediction]:
        """The latest ``n`` predictions (or dead letters) of an inference, read without
        joining its consumer group (nothing is committed)."""
        from confluent_kafka import Consumer, TopicPartition

        inf = self.get_inference(inference_id)
        topic = inf.output_topic + (".dlq" if dead_letters else "")
        consumer = Consumer(
            self.settings.kafka_config(
                **{
                    "group.id": f"kafkaml-tap-{inference_id}",
                    "enable.auto.commit": False,
                    "enable.partition.eof": True,
                }
            )
        )
        try:
            md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
            if md is None or md.error is not None:
                return []
            tps, wanted = [], 0
            for p in md.partitions:
                low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout)
                start = max(low, high - n)
                if high > start:
                    tps.append(TopicPartition(topic, p, start))
                    wanted += high - start
            if not tps:
                return []
            consumer.assign(tps)
            out: list[Prediction] = []
            deadline = time.monotonic() + timeout
            eofs = 0
            while len(out) < wanted and eofs < len(tps) and time.monotonic() < deadline:
                for m in consumer.consume(num_messages=wanted, timeout=0.5):
                    if m.error() is not None:
                        eofs += 1
                        continue
                    out.append(_prediction(m, dead_letters))
            return sorted(out, key=lambda p: p.timestamp_ms)[-n:]
        finally:
            consumer.close()

    # -- hyper-parameter search --------------------------------------------------------
    def tune(
        self,
        model: Ref,
        datasource_id: int,
        space: Mapping[str, Any],
        metric: str,
        mode: str = "max",
        num_samples: int = 4,
        max_concurrent_trials: int = 2,
    ) -> TuneInfo:
        """Search a model's hyper-parameters with Ray Tune on a stored datasource.

        ``space`` maps training arguments to samplers or fixed values, e.g.
        ``{"lr": {"loguniform": [1e-4, 1e-1]}, "batch_size": {"choice": [16, 32]},
        "epochs": 2}`` (choice, grid, uniform, loguniform, randint; see
        `kafkaml_ray.train.tune`). ``metric`` is a metric the model reports, ``val_<name>``
        for validation (``val_accuracy``, ``val_loss``); ``mode`` is "max" or "min".
        ``num_samples`` configurations are sampled (each over every ``grid`` value),
        ``max_concurrent_trials`` of them train at once, one CPU each. It returns once the
        search has started: every trial is stored as a result with ``tune_id`` set, and the
        best one is marked when the search ends (`wait_for_tune`).
        """
        import re

        from kafkaml_ray.train.tune import check_space, start_tune

        checked = check_space(space)
        if mode not in ("max", "min"):
            raise InvalidInput(f"mode must be 'max' or 'min', not {mode!r}")
        if not isinstance(metric, str) or not re.fullmatch(r"[A-Za-z_][\w.-]{0,99}", metric):
            raise InvalidInput(f"metric {metric!r} is not a metric name such as 'val_accuracy'")
        for what, n in (
            ("num_samples", num_samples),
            ("max_concurrent_trials", max_concurrent_trials),
        ):
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10_000:
                raise InvalidInput(f"{what} must be a whole number from 1 to 10000, not {n!r}")
        self._check_cluster()
        with self.store.session() as s:
            m = _find(s, MLModel, model, "model")
            ds = _get(s, Datasource, datasource_id, "datasource")
            if ds.status == DatasourceStatus.REFUSED or not ds.topic:
                raise InvalidInput(f"datasource {ds.id} was refused: it names no data to tune on")
            if ds.message.get("incremental"):
                raise InvalidInput(
                    f"datasource {ds.id} is an online stream: it has no fixed ranges to tune on"
                )
            run = TuneRun(
                model_id=m.id,
                datasource_id=ds.id,
                space=checked,
                metric=metric,
                mode=mode,
                num_samples=num_samples,
            )
            s.add(run)
            s.flush()
            tune_id = run.id
        try:
            start_tune(self.settings, tune_id, max_concurrent_trials)
        except Exception as e:
            with self.store.session() as s:
                row = s.get_one(TuneRun, tune_id)
                row.status, row.error = "failed", f"the search did not start: {e}"
            raise
        return self.get_tune(tune_id)

    def list_tunes(self) -> list[TuneInfo]:
        with self.store.session() as s:
            return [TuneInfo.of(t) for t in s.scalars(select(TuneRun).order_by(TuneRun.id))]

    def get_tune(self, tune_id: int) -> TuneInfo:
        """A search with its trials (as results) and its best result's id once done."""
        with self.store.session() as s:
            return TuneInfo.of(_get(s, TuneRun, tune_id, "tune run"))

    def stop_tune(self, tune_id: int) -> TuneInfo:
        """Stop a search: its running trials are stopped (their Ray resources freed), the
        finished ones kept, the best of them marked."""
        from kafkaml_ray.train.tune import stop_tune

        if (run := self.get_tune(tune_id)).done:
            return run
        # Stopped first: the trials being stopped write nothing more.
        with self.store.session() as s:
            run = s.get_one(TuneRun, tune_id)
            run.status, run.error = "stopped", "stopped by the user"
            for r in run.results:
                if not r.status.done:
                    r.status, r.error = ResultStatus.STOPPED, "stopped by the user"
        stop_tune(self.settings, tune_id)
        return self.get_tune(tune_id)

    def delete_tune(self, tune_id: int) -> None:
        """Delete a search and its trials' results; refused while it runs (stop it first)
        or while an inference serves one of its trials."""
        with self.store.session() as s:
            run = _get(s, TuneRun, tune_id, "tune run")
            if run.status == "running":
                raise Conflict(f"tune run {tune_id} is running: stop it first")
            ids = [r.id for r in run.results]
            _refuse_if_served(s, ids)
            s.delete(run)  # its results with it
        self._delete_artifacts(ids)

    def wait_for_tune(self, tune_id: int, timeout: float = 600) -> TuneInfo:
        """Block until the search is finished or failed."""
        deadline = time.monotonic() + timeout
        while True:
            run = self.get_tune(tune_id)
            if run.done:
                return run
            if time.monotonic() > deadline:
                raise TimeoutError(f"tune run {tune_id} is not done after {timeout:.0f}s")
            time.sleep(1.0)


def _name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput(f"a {what} name must have 1 to 200 characters")
    if name.isdigit():
        raise InvalidInput(f"a {what} name cannot be a number (numbers are ids): {name!r}")
    return name


def _find(s, table, ref: Ref, what: str):
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        row = s.get(table, int(ref))
    else:
        row = s.scalar(select(table).where(table.name == ref))
    if row is None:
        raise NotFound(f"no {what} with id or name {ref!r}")
    return row


def _refuse_if_served(s, result_ids: list[int]) -> None:
    served = s.scalars(select(Inference).where(Inference.result_id.in_(result_ids))).first()
    if served is not None:
        raise Conflict(
            f"result {served.result_id} is served by inference {served.id}: delete it first"
        )


def _get(s, table, key: int, what: str):
    row = s.get(table, int(key)) if str(key).isdigit() else None
    if row is None:
        raise NotFound(f"no {what} with id {key!r}")
    return row


def _predict(trained: frameworks.TrainedModel, data) -> tuple[bytes, str, list[int]] | str:
    """The predictions as plain bytes, dtype and shape, or the error as text: nothing that
    model code made reaches the caller's process, where unpickling it could run its code
    (an object's ``__reduce__``, a user-defined exception)."""
    import numpy as np

    try:
        out = np.asarray(trained.load().predict(data))
        if out.dtype.kind not in "biuf":
            return f"the model returned {out.dtype} values, not numbers"
        return out.tobytes(), str(out.dtype.str), [int(d) for d in out.shape]
    except BaseException as e:  # noqa: BLE001 - returned as text, never as the object
        return f"{type(e).__name__}: {e}"


def _prediction(m, dead_letter: bool) -> Prediction:
    """One output message as read by a tap. Outputs carry their input's headers, which may
    hold an ``error`` of the sender's own: only a dead letter's last ``error`` is ours."""
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])}
    values, error = None, headers.get("error") if dead_letter else None
    if not dead_letter:
        try:
            values = json.loads(m.value())["values"]
        except (ValueError, KeyError, TypeError) as e:
            error = f"not a prediction: {e}"
    key = m.key()
    return Prediction(
        partition=m.partition(),
        offset=m.offset(),
        timestamp_ms=m.timestamp()[1],
        key=None if key is None else key.decode("utf-8", "replace"),
        values=values,
        error=error,
        headers=headers,
    )


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
    _flush(s, f"a configuration named {config.name!r} exists with other models: rename it")
    return config


def _models(s, refs: Sequence[Ref]) -> list[MLModel]:
    if not refs:
        raise InvalidInput("a configuration needs at least one model")
    rows = [_find(s, MLModel, r, "model") for r in refs]
    return list({m.id: m for m in rows}.values())


def _flush(s, duplicate: str) -> None:
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(duplicate) from None
