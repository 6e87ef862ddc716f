"""Export training results, and Ray Tune searches, to MLflow (the ``mlflow`` extra).

One result becomes one MLflow run (`export_result`), a search a parent run with one child
run per trial (`export_tune`). What a result's run holds:

- **run**: ``result-<id> <model>``, from the result's creation to its last update, status
  FINISHED, FAILED or KILLED (stopped); a result still waiting or training is refused;
- **tags**: ``kafkaml.result_id``, ``.model``, ``.model_id``, ``.framework``, ``.status``,
  ``.code_sha256``, ``.model_version``, ``.deployment_id``, ``.datasource_id``,
  ``.tune_id``, ``.best``, ``.reproduction_of``, ``.error``, ``.weights_sha256`` and the
  user's tags (``kafkaml.tags``) where known; its notes as the run's description;
- **params**: the training parameters (a trial's hyper-parameters) under their names,
  ``val.<name>``, ``datasource.*`` (ranges, format, rates, counts), ``split.*`` (seed,
  malformed policy, sizes), ``framework``, ``model``, ``model_version``, ``deployment.*``
  and ``lib.<package>`` (versions); a value longer than MLflow takes is cut (``...``);
- **metrics**: ``train_<name>`` and ``val_<name>`` with the epoch as step, the final
  ``test_<name>``, ``training_time_s`` and ``phase_<name>_s`` (seconds in each phase);
- **artifacts**: ``weights/<file>``, ``confusion_matrix.png``, ``confusion_matrix.json``,
  ``code/model.py`` (the imports and code of the version it trained with) and
  ``lineage.json``; each one the result lacks is left out;
- **dataset input**: the datasource (name: its topics; source: its ranges; digest: of the
  ranges; source type ``kafka``; schema: format and its config; profile: counts, rates and
  split sizes), when the result's lineage records one.

Values whose key names a secret (password, token, ...) are logged as ``***``; nothing is
pickled. Each call makes new runs: exporting twice gives two runs.

Example (a local SQLite tracking store; artifacts go beside it, in ``mlartifacts/``)::

    from kafkaml_ray import Client
    from kafkaml_ray.tracking import export_result, export_tune

    client = Client()
    run_id = export_result(client, 12, "sqlite:///mlflow.db")
    parent_id = export_tune(client, 3, "sqlite:///mlflow.db", experiment="digits-search")
    # mlflow ui --backend-store-uri sqlite:///mlflow.db
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import posixpath
import re
import tempfile
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from kafkaml_ray import artifacts
from kafkaml_ray.errors import InvalidInput, KafkaMLError, NotFound, Unavailable
from kafkaml_ray.lineage_record import CodeRef, Lineage
from kafkaml_ray.redaction import public_url, redact
from kafkaml_ray.results import topics

if TYPE_CHECKING:
    from kafkaml_ray.client import Client
    from kafkaml_ray.schemas import ResultInfo

__all__ = ["export_result", "export_tune"]

logger = logging.getLogger(__name__)

INSTALL_HINT = "install the mlflow extra: pip install 'kafkaml-ray[mlflow]'"
DEFAULT_EXPERIMENT = "kafkaml-ray"

#: a result's and a search's status as an MLflow run status (others are not exported)
_RUN_STATUS = {"finished": "FINISHED", "failed": "FAILED", "stopped": "KILLED"}
#: what a datasource's params hold (``datasource.<name>``)
_DATASOURCE_PARAMS = "topic id format validation_rate test_rate messages malformed incremental"


# -- mlflow ------------------------------------------------------------------------------
def _mlflow() -> Any:
    """The ``mlflow`` package, or InvalidInput saying how to install it."""
    try:
        import mlflow.entities
        import mlflow.tracking
    except ImportError as e:
        raise InvalidInput(f"MLflow is not installed ({e}): {INSTALL_HINT}") from None
    return mlflow


def _limits() -> tuple[int, int, int]:
    """MLflow's longest param value, tag value and key."""
    from mlflow.utils import validation as v

    return v.MAX_PARAM_VAL_LENGTH, v.MAX_TAG_VAL_LENGTH, v.MAX_ENTITY_KEY_LENGTH


def _default_artifact_location(tracking_uri: str, experiment: str) -> str | None:
    """For a SQLite store, ``mlartifacts/<experiment>`` beside its file (MLflow's own
    default is relative to the working directory); otherwise the store decides."""
    path = tracking_uri.removeprefix("sqlite:///").split("?", 1)[0]
    if not tracking_uri.startswith("sqlite:///") or path in ("", ":memory:"):
        return None
    folder = re.sub(r"[^\w.\-]", "_", experiment).lstrip(".") or "default"
    return (Path(path).resolve().parent / "mlartifacts" / folder).as_uri()


def _experiment_id(ml: Any, name: str, artifact_location: str | None) -> str:
    from mlflow.exceptions import MlflowException

    found = ml.get_experiment_by_name(name)
    if found is None:
        try:
            return ml.create_experiment(name, artifact_location=artifact_location)
        except MlflowException:
            found = ml.get_experiment_by_name(name)  # made meanwhile by another exporter
            if found is None:
                raise
    if found.lifecycle_stage == "deleted":
        raise InvalidInput(f"MLflow experiment {name!r} is deleted: restore it or use another")
    return found.experiment_id


def _open(tracking_uri: str, experiment: str, artifact_location: str | None) -> tuple[Any, str]:
    """An MLflow client of ``tracking_uri`` (no process-wide MLflow setting is changed) and
    the id of ``experiment``, made if missing."""
    if not str(tracking_uri or "").strip() or not str(experiment or "").strip():
        raise InvalidInput("give a tracking URI (e.g. sqlite:///mlflow.db) and an experiment name")
    mlflow = _mlflow()
    try:
        ml = mlflow.tracking.MlflowClient(tracking_uri=tracking_uri)
        location = artifact_location or _default_artifact_location(tracking_uri, experiment)
        return ml, _experiment_id(ml, experiment, location)
    except KafkaMLError:
        raise
    except Exception as e:  # noqa: BLE001 - an unusable store, said in one line
        why = (str(e).strip().splitlines() or [type(e).__name__])[0][:300]
        raise Unavailable(
            f"the MLflow tracking store {public_url(tracking_uri)} cannot be used: {why}"
        ) from None


# -- values ------------------------------------------------------------------------------
def _ms(when: datetime | None) -> int | None:
    """Milliseconds since the epoch (the store's datetimes are naive UTC)."""
    return None if when is None else int(when.replace(tzinfo=when.tzinfo or UTC).timestamp() * 1e3)


def _number(value: Any) -> float | None:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else None


def _text(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value, sort_keys=True, default=str)


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _key(name: str, limit: int) -> str:
    """A valid MLflow name: letters, digits, ``_-. /``, not a path resolving elsewhere."""
    key = re.sub(r"[^\w.\- /]", "_", str(name)).strip("/ ")
    key = re.sub(r"/+", "/", key).lstrip(".") or "_"
    return key[:limit]


def _code_text(imports: str | None, code: str | None) -> str:
    return "\n\n".join(part for part in (imports, code) if part)


# -- one result --------------------------------------------------------------------------
def _tags(result: ResultInfo, lin: Lineage | None) -> dict[str, Any]:
    code = lin.code if lin else CodeRef()
    tags: dict[str, Any] = {
        "kafkaml.result_id": result.id,
        "kafkaml.model": result.model_name,
        "kafkaml.model_id": result.model_id,
        "kafkaml.framework": result.framework,
        "kafkaml.status": result.status,
        "kafkaml.code_sha256": result.code_sha256 or code.sha256,
        "kafkaml.model_version": result.model_version or code.version,
        "kafkaml.deployment_id": result.deployment_id
        or (lin.deployment.id if lin and lin.deployment else None),
        "kafkaml.datasource_id": result.datasource_id,
        "kafkaml.tune_id": result.tune_id,
        "kafkaml.best": str(bool(result.best)).lower() if result.tune_id is not None else None,
        "kafkaml.reproduction_of": result.reproduction_of,
        "kafkaml.error": result.error,
        "kafkaml.tags": ",".join(result.tags) or None,
        "kafkaml.lineage_recorded_at": lin.recorded_at if lin else None,
        "mlflow.note.content": result.notes or None,
    }
    return {k: v for k, v in tags.items() if v is not None}


def _params(result: ResultInfo, lin: Lineage | None) -> dict[str, Any]:
    params: dict[str, Any] = dict(result.params or result.hyperparameters or {})
    params["framework"] = lin.framework if lin else result.framework
    params["model"] = (lin.code.model if lin else None) or result.model_name
    params["model_version"] = result.model_version or (lin.code.version if lin else None)
    if lin:
        params.update({f"val.{k}": v for k, v in lin.val_params.items()})
        for name in _DATASOURCE_PARAMS.split():
            params[f"datasource.{name}"] = getattr(lin.datasource, name)
        if lin.datasource.config:
            params["datasource.config"] = lin.datasource.config
        params["split.shuffle_seed"] = lin.split.shuffle_seed
        params["split.on_malformed"] = lin.split.on_malformed
        for name, size in lin.split.sizes.items():
            params[f"split.{name}_size"] = size
        for name in ("id", "gpu_fraction", "confusion_matrix"):
            params[f"deployment.{name}"] = getattr(lin.deployment, name, None)
        params.update({f"lib.{k}": v for k, v in lin.libraries.items()})
    return {k: v for k, v in redact(params).items() if v is not None}


def _metrics(result: ResultInfo) -> list[tuple[str, float, int]]:
    """(name, value, step) of the learning curve and the final numbers."""
    out: list[tuple[str, float, int]] = []

    def add(values: Any, name: str = "{}", step: int = 0) -> None:
        for k, value in (values or {}).items() if isinstance(values, Mapping) else ():
            if (v := _number(value)) is not None:
                out.append((name.format(k), v, step))

    for i, entry in enumerate(e for e in result.history or [] if isinstance(e, Mapping)):
        step = entry.get("epoch", i)
        step = step if isinstance(step, int) and not isinstance(step, bool) else i
        add(entry.get("train"), "train_{}", step)
        add(entry.get("val"), "val_{}", step)
    if not result.history:  # no curve recorded: the final numbers, at step 0
        add(result.train_metrics, "train_{}")
        add(result.val_metrics, "val_{}")
    add(result.test_metrics, "test_{}")
    add({"training_time_s": result.training_time_s})
    add(result.phases, "phase_{}_s")
    return out


def _stored_uris(client: Client, result_id: int) -> tuple[str | None, str | None]:
    """A result's weights and picture URIs as stored, credentials included (`ResultInfo`
    shows them without): to read them, never to log them."""
    from kafkaml_ray.store import TrainingResult

    with client.store.session() as s:
        row = s.get_one(TrainingResult, result_id)
        return row.weights_uri, row.confusion_matrix_uri


def _read(uri: str, what: str, result_id: int) -> bytes | None:
    """An artifact's bytes; None (and a warning) when it cannot be read."""
    try:
        return artifacts.get(uri)
    except (OSError, ValueError) as e:
        where = public_url(uri)
        logger.warning("result %d: its %s at %s is not exported: %s", result_id, what, where, e)
        return None


def _write(path: Path, data: bytes | str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data if isinstance(data, bytes) else data.encode())


def _stage(client: Client, result: ResultInfo, lin: Lineage | None, folder: Path) -> dict[str, Any]:
    """Write the artifacts of ``result`` under ``folder``; return the tags they add."""
    tags: dict[str, Any] = {}
    missing: list[str] = []
    weights_uri, matrix_uri = _stored_uris(client, result.id)  # (with their credentials)
    if weights_uri:
        data = _read(weights_uri, "weights", result.id)
        if data is None:
            missing.append("weights")
        else:
            name = posixpath.basename(weights_uri.rstrip("/")) or "weights.bin"
            _write(folder / "weights" / name, data)
            digest = hashlib.sha256(data).hexdigest()
            tags["kafkaml.weights_sha256"] = digest
            recorded = lin.weights.sha256 if lin and lin.weights else None
            if recorded and recorded != digest:  # kept, and said: the file changed since
                logger.warning("result %d: its weights differ from the recorded", result.id)
                tags["kafkaml.weights_sha256_recorded"] = recorded
    if matrix_uri:
        data = _read(matrix_uri, "confusion matrix picture", result.id)
        if data is None:
            missing.append("confusion_matrix.png")
        else:
            _write(folder / "confusion_matrix.png", data)
    if result.confusion_matrix is not None:
        _write(folder / "confusion_matrix.json", json.dumps(result.confusion_matrix))
    code = lin.code if lin else CodeRef()
    text = _code_text(code.imports, code.code) if code.code else ""
    if not text and result.model_version is not None:  # not the model's: it may have changed
        with contextlib.suppress(NotFound):
            version = client.get_model_version(result.model_id, result.model_version)
            text = _code_text(version.imports, version.code)
    if text:
        _write(folder / "code" / "model.py", text)
    if lin:
        _write(folder / "lineage.json", json.dumps(redact(lin.as_json()), indent=2))
    return {**tags, "kafkaml.missing_artifacts": ",".join(missing) or None}


def _dataset_input(lin: Lineage | None) -> Any | None:
    """The datasource as an MLflow dataset input, if its lineage records one."""
    if lin is None or not lin.datasource.topic:
        return None
    datasource, ranges = lin.datasource, lin.datasource.topic
    entities = _mlflow().entities
    schema = {"format": datasource.format, "config": datasource.config}
    profile = {
        name: getattr(datasource, name)
        for name in ("messages", "malformed", "validation_rate", "test_rate", "incremental")
        if getattr(datasource, name) is not None
    }
    if sizes := lin.split.sizes:
        profile["sizes"] = sizes
    dataset = entities.Dataset(
        name=",".join(topics(ranges))[:500] or "kafka",
        digest=hashlib.sha256(ranges.encode()).hexdigest()[:32],
        source_type="kafka",
        source=ranges,
        schema=json.dumps(redact(schema), sort_keys=True, default=str),
        profile=json.dumps(profile, sort_keys=True, default=str),
    )
    context = [entities.InputTag(key="mlflow.data.context", value="training")]
    return entities.DatasetInput(dataset=dataset, tags=context)


def _keyed(values: Mapping[str, Any] | None, limit: int) -> dict[str, Any]:
    """``values`` under valid MLflow names (one value a name), None ones left out."""
    return {_key(k, limit): v for k, v in (values or {}).items() if v is not None}


def _create_run(ml: Any, experiment_id: str, name: str, start: int | None, tags: dict) -> str:
    """A new run with ``tags`` (cut to MLflow's limits); its id."""
    _, tag_limit, key_limit = _limits()
    tags = {k: _cut(_text(v), tag_limit) for k, v in _keyed(tags, key_limit).items()}
    return ml.create_run(experiment_id, start_time=start, tags=tags, run_name=name).info.run_id


def _log_batch(
    ml: Any, run_id: str, when: int, params: dict | None = None, metrics=(), tags=None
) -> None:
    """Params, (name, value, step) metrics and tags in one `log_batch` (which MLflow splits
    by its limits), names made valid and values cut to MLflow's limits."""
    e = _mlflow().entities
    param_limit, tag_limit, key_limit = _limits()
    ml.log_batch(
        run_id,
        metrics=[e.Metric(_key(k, key_limit), float(v), when, step) for k, v, step in metrics],
        params=[
            e.Param(k, _cut(_text(v), param_limit)) for k, v in _keyed(params, key_limit).items()
        ],
        tags=[e.RunTag(k, _cut(_text(v), tag_limit)) for k, v in _keyed(tags, key_limit).items()],
    )


def _delete_quietly(ml: Any, run_ids: Iterable[str]) -> None:
    for run_id in run_ids:
        try:
            ml.delete_run(run_id)
        except Exception:  # noqa: BLE001 - already failing: keep the first error
            logger.warning("could not delete the partly exported MLflow run %s", run_id)


def _run_status(what: str, status: str) -> str:
    if status not in _RUN_STATUS:
        raise InvalidInput(f"{what} is still {status}: export it once it is done")
    return _RUN_STATUS[status]


def _result_run(
    ml: Any, experiment_id: str, client: Client, result: ResultInfo, parent_run_id: str | None
) -> str:
    status = _run_status(f"result {result.id}", result.status)
    lin = result.lineage
    start, end = _ms(result.created_at), _ms(result.updated_at)
    tags = {**_tags(result, lin), "mlflow.parentRunId": parent_run_id}
    run_id = _create_run(ml, experiment_id, f"result-{result.id} {result.model_name}", start, tags)
    try:
        with tempfile.TemporaryDirectory(prefix="kafkaml-mlflow-") as tmp:
            more_tags = _stage(client, result, lin, Path(tmp))
            params, metrics = _params(result, lin), _metrics(result)
            _log_batch(ml, run_id, end or start or 0, params, metrics, more_tags)
            if any(Path(tmp).iterdir()):
                ml.log_artifacts(run_id, tmp)
        if (dataset := _dataset_input(lin)) is not None:
            ml.log_inputs(run_id, datasets=[dataset])
        ml.set_terminated(run_id, status, end_time=end)
    except BaseException:
        _delete_quietly(ml, [run_id])  # no half-exported run left behind
        raise
    return run_id


def export_result(
    client: Client,
    result_id: int,
    tracking_uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    parent_run_id: str | None = None,
    *,
    artifact_location: str | None = None,
) -> str:
    """Log the training result ``result_id`` as one MLflow run; return the run's id.

    ``tracking_uri`` is any MLflow tracking URI (``sqlite:///mlflow.db``, a directory,
    ``http://host:5000``); ``experiment`` is made if missing, with its artifacts at
    ``artifact_location`` (default: the store's; for SQLite, ``mlartifacts/<experiment>``
    beside the database file). ``parent_run_id`` nests the run under another one. What is
    logged: see the module's description. Raises NotFound for an unknown result,
    InvalidInput for one still training or when MLflow is not installed.
    """
    _mlflow()
    result = client.get_result(result_id)
    _run_status(f"result {result.id}", result.status)
    ml, experiment_id = _open(tracking_uri, experiment, artifact_location)
    return _result_run(ml, experiment_id, client, result, parent_run_id)


# -- a search ----------------------------------------------------------------------------
def export_tune(
    client: Client,
    tune_id: int,
    tracking_uri: str,
    experiment: str = DEFAULT_EXPERIMENT,
    *,
    artifact_location: str | None = None,
) -> str:
    """Log the Ray Tune search ``tune_id`` as a parent MLflow run with one child run per
    trial (`export_result`, tagged ``mlflow.parentRunId``); return the parent's id.

    The parent run is named ``tune-<id> <model>``; its params are ``metric``, ``mode``,
    ``space`` (JSON), ``num_samples`` and ``datasource_id``; its tags ``kafkaml.tune_id``,
    ``.model``, ``.status``, ``.best_result_id`` and ``.best_run_id``; its metrics the best
    trial's ``best_<metric>`` and the number of trials. Trials still waiting or training
    are left out (``kafkaml.skipped_trials``); a search still running is refused.
    """
    from kafkaml_ray.train.tune import metric_value

    _mlflow()
    tune = client.get_tune(tune_id)
    status = _run_status(f"tune run {tune.id}", tune.status)
    ml, experiment_id = _open(tracking_uri, experiment, artifact_location)
    tags = {
        "kafkaml.tune_id": tune.id,
        "kafkaml.model": tune.model_name,
        "kafkaml.model_id": tune.model_id,
        "kafkaml.datasource_id": tune.datasource_id,
        "kafkaml.status": tune.status,
        "kafkaml.best_result_id": tune.best_result_id,
        "kafkaml.error": tune.error,
    }
    start, end = _ms(tune.created_at), _ms(tune.updated_at)
    parent_id = _create_run(ml, experiment_id, f"tune-{tune.id} {tune.model_name}", start, tags)
    children: dict[int, str] = {}
    try:
        for trial in tune.trials:
            if trial.status in _RUN_STATUS:
                children[trial.id] = _result_run(ml, experiment_id, client, trial, parent_id)
        params = {
            "metric": tune.metric,
            "mode": tune.mode,
            "space": redact(tune.space),
            "num_samples": tune.num_samples,
            "datasource_id": tune.datasource_id,
        }
        metrics = [("trials", len(tune.trials), 0), ("trials_exported", len(children), 0)]
        best = next((t for t in tune.trials if t.id == tune.best_result_id), None)
        if best is not None and (value := metric_value(best, tune.metric)) is not None:
            metrics.append((f"best_{tune.metric}", value, 0))
        skipped = [str(t.id) for t in tune.trials if t.id not in children]
        more_tags = {
            "kafkaml.best_run_id": children.get(best.id) if best is not None else None,
            "kafkaml.skipped_trials": ",".join(skipped) or None,
        }
        _log_batch(ml, parent_id, end or start or 0, params, metrics, more_tags)
        ml.set_terminated(parent_id, status, end_time=end)
    except BaseException:
        _delete_quietly(ml, [*children.values(), parent_id])
        raise
    return parent_id
