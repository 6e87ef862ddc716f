"""Exporting results and Tune searches to MLflow (`kafkaml_ray.tracking`): rows written
straight into a fresh store (no broker, no Ray), exported to a SQLite tracking store, then
read back with MLflow's own client."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from kafkaml_ray import artifacts
from kafkaml_ray.errors import InvalidInput, NotFound, Unavailable
from kafkaml_ray.store import (
    Datasource,
    DatasourceStatus,
    ModelVersion,
    ResultStatus,
    TrainingResult,
    TuneRun,
)
from kafkaml_ray.tracking import export_result, export_tune
from tests.conftest import add_model_unvalidated

IMPORTS = "import torch\nfrom torch import nn"
CODE = "class Net(nn.Module):\n    def forward(self, x):\n        return x\n"
WEIGHTS = b"\x00safetensors\x01" * 64
PNG = b"\x89PNG\r\n\x1a\n" + bytes(range(256))
RANGES = "digits:0:0:1797"
HISTORY = [
    {"epoch": e, "train": {"loss": 1.0 / e, "accuracy": 0.5 + e / 10}, "val": {"loss": 1.2 / e}}
    for e in (1, 2, 3)
]
TEST_METRICS = {"loss": 0.35, "accuracy": 0.91}
MATRIX = [[5, 1], [0, 6]]


@pytest.fixture(autouse=True)
def _quiet_mlflow(monkeypatch):
    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    monkeypatch.setenv("DO_NOT_TRACK", "true")
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)


@pytest.fixture
def uri(tmp_path) -> str:
    return f"sqlite:///{tmp_path / 'mlflow.db'}"


@pytest.fixture
def ml(uri):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri=uri)


def lineage(params: dict[str, Any], tune: dict[str, Any] | None = None) -> dict[str, Any]:
    return {
        "recorded_at": "2026-12-05T14:30:00+00:00",
        "datasource": {
            "id": 1,
            "topic": RANGES,
            "format": "RAW",
            "config": {"data_type": "float32", "label_type": "int64", "data_reshape": "8 8"},
            "messages": 1797,
            "malformed": 0,
            "validation_rate": 0.1,
            "test_rate": 0.1,
            "incremental": False,
            "description": "",
        },
        "split": {
            "shuffle_seed": 7,
            "on_malformed": "fail",
            "sizes": {"train": 1437, "val": 180, "test": 180},
        },
        "code": {
            "model_id": 1,
            "model": "digits",
            "version": 1,
            "sha256": "c0de",
            "imports": IMPORTS,
            "code": CODE,
        },
        "framework": "pytorch",
        "params": params,
        "val_params": {"batch_size": 64},
        "deployment": None if tune else {"id": 4, "gpu_fraction": 0.0, "confusion_matrix": True},
        "tune": tune,
        "reproduction_of": None,
        "weights": {"uri": "", "sha256": "", "bytes": len(WEIGHTS)},
        "libraries": {"python": "3.11.7", "ray": "2.60.0", "torch": "2.15.0"},
    }


@pytest.fixture
def rows(client):
    """A model with one code version and a datasource; `add(...)` inserts a result row
    (with its weights and picture written as artifacts) and returns its id."""
    model_id = add_model_unvalidated(client, "digits", "pytorch", CODE)
    with client.store.session() as s:
        version = ModelVersion(
            model_id=model_id, number=1, sha256="c0de", imports=IMPORTS, code=CODE
        )
        datasource = Datasource(
            source_topic="control",
            source_partition=0,
            source_offset=0,
            status=DatasourceStatus.ACCEPTED,
            topic=RANGES,
        )
        s.add_all([version, datasource])
        s.flush()
        version_id, datasource_id = version.id, datasource.id

    def add(
        status=ResultStatus.FINISHED,
        weights: bool | str = True,
        png: bool = True,
        row_lineage: dict[str, Any] | None = None,
        **fields: Any,
    ) -> int:
        with client.store.session() as s:
            defaults: dict[str, Any] = {
                "history": HISTORY,
                "train_metrics": HISTORY[-1]["train"],
                "val_metrics": HISTORY[-1]["val"],
                "test_metrics": TEST_METRICS,
                "confusion_matrix": MATRIX,
                "training_time_s": 12.5,
                "phases": {"announced": 100.0, "read": 100.5, "split": 101.75, "ended": 110.0},
                "model_version_id": version_id,
            }
            row = TrainingResult(model_id=model_id, status=status, **{**defaults, **fields})
            s.add(row)
            s.flush()
            base, prefix = client.settings.artifacts_uri, f"results/{row.id}"
            if weights is True:
                row.weights_uri = artifacts.put(base, f"{prefix}/model.safetensors", WEIGHTS)
            elif weights:
                row.weights_uri = weights
            if png:
                row.confusion_matrix_uri = artifacts.put(base, f"{prefix}/matrix.png", PNG)
            if row_lineage is not None:
                row.lineage = row_lineage
            return row.id

    add.model_id, add.datasource_id = model_id, datasource_id
    return add


def _download(ml, run_id: str, path: str, tmp_path: Path) -> bytes:
    dst = tmp_path / "download" / run_id
    dst.mkdir(parents=True, exist_ok=True)
    return Path(ml.download_artifacts(run_id, path, str(dst))).read_bytes()


def test_a_result_exports_as_one_run(client, rows, uri, ml, tmp_path):
    import mlflow

    params = {"batch_size": 32, "epochs": 3, "api_token": "s3cret", "long": "x" * 7000}
    result_id = rows(row_lineage=lineage(params))
    run_id = export_result(client, result_id, uri)
    assert mlflow.get_tracking_uri() != uri  # nothing process-wide was set

    run = ml.get_run(run_id)
    assert run.info.run_name == f"result-{result_id} digits"
    assert run.info.status == "FINISHED"
    assert ml.get_experiment(run.info.experiment_id).name == "kafkaml-ray"
    # artifacts beside the database, not in the working directory
    assert run.info.artifact_uri.startswith((tmp_path / "mlartifacts" / "kafkaml-ray").as_uri())
    tags = run.data.tags
    assert {k: tags[k] for k in tags if k.startswith("kafkaml.")} == {
        "kafkaml.result_id": str(result_id),
        "kafkaml.model": "digits",
        "kafkaml.model_id": str(rows.model_id),
        "kafkaml.framework": "pytorch",
        "kafkaml.status": "finished",
        "kafkaml.code_sha256": "c0de",
        "kafkaml.model_version": "1",
        "kafkaml.deployment_id": "4",
        "kafkaml.datasource_id": "1",
        "kafkaml.lineage_recorded_at": "2026-12-05T14:30:00+00:00",
        "kafkaml.weights_sha256": __import__("hashlib").sha256(WEIGHTS).hexdigest(),
    }

    p = run.data.params
    assert (p["batch_size"], p["epochs"], p["val.batch_size"]) == ("32", "3", "64")
    assert p["api_token"] == "***"  # a secret is never logged
    assert len(p["long"]) == 6000 and p["long"].endswith("...")  # cut to MLflow's limit
    assert p["datasource.topic"] == RANGES and p["datasource.format"] == "RAW"
    assert (p["datasource.validation_rate"], p["datasource.test_rate"]) == ("0.1", "0.1")
    assert (p["split.shuffle_seed"], p["split.train_size"]) == ("7", "1437")
    assert json.loads(p["datasource.config"])["data_reshape"] == "8 8"
    assert (p["framework"], p["model"], p["model_version"]) == ("pytorch", "digits", "1")
    assert (p["lib.ray"], p["lib.torch"], p["deployment.id"]) == ("2.60.0", "2.15.0", "4")

    for split in ("train", "val"):
        for name in HISTORY[0][split]:
            got = ml.get_metric_history(run_id, f"{split}_{name}")
            assert [(m.step, m.value) for m in got] == [
                (h["epoch"], pytest.approx(h[split][name])) for h in HISTORY
            ]
    metrics = run.data.metrics
    for name, value in TEST_METRICS.items():
        assert metrics[f"test_{name}"] == pytest.approx(value)
    assert metrics["training_time_s"] == 12.5
    for phase, seconds in client.get_result(result_id).phases.items():
        assert metrics[f"phase_{phase}_s"] == pytest.approx(seconds)

    listed = {a.path for a in ml.list_artifacts(run_id)}
    assert listed == {
        "weights",
        "code",
        "confusion_matrix.png",
        "confusion_matrix.json",
        "lineage.json",
    }
    assert [a.path for a in ml.list_artifacts(run_id, "weights")] == ["weights/model.safetensors"]
    assert _download(ml, run_id, "weights/model.safetensors", tmp_path) == WEIGHTS
    assert _download(ml, run_id, "confusion_matrix.png", tmp_path) == PNG
    assert _download(ml, run_id, "code/model.py", tmp_path).decode() == f"{IMPORTS}\n\n{CODE}"
    assert json.loads(_download(ml, run_id, "confusion_matrix.json", tmp_path)) == MATRIX
    recorded = _download(ml, run_id, "lineage.json", tmp_path).decode()
    assert "s3cret" not in recorded
    assert json.loads(recorded)["datasource"]["messages"] == 1797

    (dataset_input,) = run.inputs.dataset_inputs
    dataset = dataset_input.dataset
    assert (dataset.name, dataset.source, dataset.source_type) == ("digits", RANGES, "kafka")
    assert len(dataset.digest) == 32
    assert json.loads(dataset.schema)["format"] == "RAW"
    profile = json.loads(dataset.profile)
    assert (profile["messages"], profile["sizes"]["test"]) == (1797, 180)
    assert [(t.key, t.value) for t in dataset_input.tags] == [("mlflow.data.context", "training")]


def test_missing_artifacts_are_skipped_and_the_run_still_exports(client, rows, uri, ml):
    # No lineage, no weights, no picture, no matrix: only what the row holds.
    bare = rows(
        status=ResultStatus.FAILED,
        error="out of memory",
        weights=False,
        png=False,
        confusion_matrix=None,
        model_version_id=None,
    )
    run = ml.get_run(export_result(client, bare, uri, experiment="other"))
    assert run.info.status == "FAILED"
    assert run.data.tags["kafkaml.error"] == "out of memory"
    assert "kafkaml.weights_sha256" not in run.data.tags
    assert ml.list_artifacts(run.info.run_id) == []
    assert not run.inputs.dataset_inputs
    assert run.data.metrics["test_accuracy"] == pytest.approx(0.91)
    assert len(ml.get_metric_history(run.info.run_id, "train_loss")) == 3

    # Weights named but gone from the artifact store: skipped too, and said so.
    gone = rows(status=ResultStatus.STOPPED, weights="/nonexistent/kml/model.safetensors")
    run = ml.get_run(export_result(client, gone, uri, experiment="other"))
    assert run.info.status == "KILLED"
    assert run.data.tags["kafkaml.missing_artifacts"] == "weights"
    listed = {a.path for a in ml.list_artifacts(run.info.run_id)}
    assert listed == {"code", "confusion_matrix.png", "confusion_matrix.json"}


def test_a_tune_search_exports_as_a_parent_run_with_one_child_per_trial(
    client, rows, uri, ml, tmp_path
):
    with client.store.session() as s:
        run = TuneRun(
            model_id=rows.model_id,
            datasource_id=rows.datasource_id,
            space={"lr": {"loguniform": [0.0001, 0.1]}, "epochs": 3},
            metric="val_loss",
            mode="min",
            num_samples=2,
            status="finished",
        )
        s.add(run)
        s.flush()
        tune_id = run.id
    tune = {"id": tune_id, "metric": "val_loss", "mode": "min", "space": {}}
    trials = {}
    for lr, val_loss, best in ((0.01, 0.4, False), (0.001, 0.3, True)):
        trial = rows(
            tune_id=tune_id,
            best=best,
            hyperparameters={"lr": lr},
            val_metrics={"loss": val_loss},
            row_lineage=lineage({"lr": lr, "epochs": 3}, tune),
        )
        trials[trial] = lr

    parent_id = export_tune(client, tune_id, uri, experiment="search")
    parent = ml.get_run(parent_id)
    assert parent.info.run_name == f"tune-{tune_id} digits"
    assert parent.info.status == "FINISHED"
    p = parent.data.params
    assert (p["metric"], p["mode"], p["num_samples"]) == ("val_loss", "min", "2")
    assert json.loads(p["space"]) == {"lr": {"loguniform": [0.0001, 0.1]}, "epochs": 3}
    assert parent.data.metrics["best_val_loss"] == pytest.approx(0.3)
    assert parent.data.metrics["trials"] == 2
    assert parent.data.tags["kafkaml.tune_id"] == str(tune_id)
    assert parent.data.tags["kafkaml.best_result_id"] == str(max(trials))

    children = ml.search_runs(
        [parent.info.experiment_id], filter_string=f"tags.mlflow.parentRunId = '{parent_id}'"
    )
    by_result = {int(c.data.tags["kafkaml.result_id"]): c for c in children}
    assert set(by_result) == set(trials)
    for result_id, lr in trials.items():
        child = by_result[result_id]
        assert child.data.params["lr"] == str(lr)
        assert child.data.tags["kafkaml.tune_id"] == str(tune_id)
        assert child.data.tags["kafkaml.best"] == str(result_id == max(trials)).lower()
        assert child.info.status == "FINISHED"
        weights = _download(ml, child.info.run_id, "weights/model.safetensors", tmp_path)
        assert weights == WEIGHTS
    assert parent.data.tags["kafkaml.best_run_id"] == by_result[max(trials)].info.run_id


def test_clear_errors(client, rows, uri, monkeypatch, tmp_path):
    with pytest.raises(NotFound, match="no training result with id 999"):
        export_result(client, 999, uri)
    training = rows(status=ResultStatus.TRAINING)
    with pytest.raises(InvalidInput, match=f"result {training} is still training"):
        export_result(client, training, uri)
    # A tracking store that cannot be used is one line, not MLflow's traceback.
    done = rows(status=ResultStatus.FINISHED)
    (tmp_path / "a-file").write_text("")
    for bad, why in [
        ("nosuch://x", "cannot be used: .*nosuch"),
        (f"sqlite:///{tmp_path}/a-file/m.db", "cannot be used: "),
    ]:
        with pytest.raises(Unavailable, match=f"the MLflow tracking store {bad} {why}"):
            export_result(client, done, bad)
    monkeypatch.setitem(sys.modules, "mlflow", None)  # as if not installed
    with pytest.raises(InvalidInput, match=r"pip install 'kafkaml-ray\[mlflow\]'"):
        export_result(client, training, uri)


def test_credentials_in_an_artifact_uri_reach_no_record_show_or_export(
    client, rows, uri, ml, tmp_path
):
    """KAFKAML_ARTIFACTS=s3://key:secret@bucket/... put the secret in every weights URI,
    and from there into `result show`, the lineage record and the MLflow export: it is
    taken out by value wherever a URI is shown or recorded."""
    from kafkaml_ray.lineage import saved
    from kafkaml_ray.lineage_record import Lineage

    secret_uri = "s3://AKIAKEY:s3cret-value@bucket/kml/results/9/model.safetensors"
    record = saved(Lineage.of(lineage({"epochs": 3})), secret_uri, WEIGHTS, "pytorch")
    assert record.weights.uri == "s3://AKIAKEY:***@bucket/kml/results/9/model.safetensors"
    result_id = rows(weights=secret_uri, row_lineage=record.as_json())
    shown = client.get_result(result_id)
    assert "s3cret-value" not in shown.model_dump_json()
    run_id = export_result(client, result_id, uri)  # (its weights cannot be read: left out)
    run = ml.get_run(run_id)
    exported = (
        json.dumps([run.data.params, run.data.tags])
        + _download(ml, run_id, "lineage.json", tmp_path).decode()
    )
    assert "s3cret-value" not in exported and "AKIAKEY:***@bucket" in exported
