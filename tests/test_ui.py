"""The control panel, driven by Streamlit's AppTest against a real store, Ray and broker.

Settings reach the app as in production: as environment variables (``Settings.env()``),
read by ``Settings.from_env()`` when the app builds its session's Client. The app's server
address is set to 127.0.0.1 (Streamlit's config) except in the password tests.
"""

from __future__ import annotations

import json
import math
import os
import random
import re
import uuid
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner
from streamlit import config
from streamlit.testing.v1 import AppTest

from kafkaml_ray import Settings
from kafkaml_ray.cli.ui import ui_command
from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.panel import is_loopback, serve_ui, start_ui, stop_ui, ui_status

ROOT = Path(__file__).resolve().parent.parent
APP = str(ROOT / "kafkaml_ray" / "ui" / "app.py")
BAD_CODE = "class Net(nn.Module):\n    def __init__(self)\n        pass\n"


@pytest.fixture
def served_at(monkeypatch):
    """Set Streamlit's server address for the app under test."""
    old = config.get_option("server.address")
    monkeypatch.delenv("KAFKAML_UI_PASSWORD", raising=False)

    def set_address(address: str | None) -> None:
        config.set_option("server.address", address)

    set_address("127.0.0.1")
    yield set_address
    set_address(old)


@pytest.fixture
def no_backend(monkeypatch, tmp_path):
    """Point the app at a home where no broker nor Ray runs (ports where nothing listens)."""
    from conftest import free_ports

    monkeypatch.setenv("KAFKAML_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("KAFKAML_BROKER_PORT", str(free_ports(1)))
    monkeypatch.setenv("KAFKAML_RAY_PORT", str(free_ports(1)))


@pytest.fixture
def open_page(settings, monkeypatch, served_at):
    """Open a page of the app (``None``: the first) with the test's settings."""
    for key, value in settings.env().items():
        monkeypatch.setenv(key, value)

    def open_(page: str | None = None, signed_in: bool = True) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=180)
        if signed_in:  # (signing in: test_the_panel_asks_for_its_password_on_127_0_0_1)
            at.session_state["_kml_authenticated"] = True
        at.run()
        if page:
            at.switch_page(f"views/{page}.py").run()
        assert not at.exception, at.exception
        return at

    return open_


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def charts(at: AppTest) -> list[dict]:
    """The Vega-Lite specs of the page's Altair charts."""
    return [json.loads(e.proto.spec) for e in at.get("vega_lite_chart")]


# -- a store as training leaves it, without training ----------------------------------------
DIGITS_CONFIG = {
    "data_type": "float32",
    "label_type": "int64",
    "data_reshape": "8 8",
    "label_reshape": "",
}


def _curve(epochs: int, start: float, end: float, rng: random.Random) -> list[float]:
    return [
        round(end + (start - end) * math.exp(-3.0 * e / epochs) + rng.uniform(-0.01, 0.01), 4)
        for e in range(1, epochs + 1)
    ]


def _matrix(accuracy: float, rng: random.Random, classes: int = 10, per: int = 18) -> list:
    rows = []
    for true in range(classes):
        row = [0] * classes
        for _ in range(per):
            hit = rng.random() < accuracy
            row[true if hit else rng.choice([c for c in range(classes) if c != true])] += 1
        rows.append(row)
    return rows


def finish(r, settings, epochs: int, accuracy: float, rng: random.Random) -> None:
    """Fill a result row as a finished run leaves it (`Reporter.epoch` and `finish`)."""
    from kafkaml_ray import artifacts
    from kafkaml_ray.store import ResultStatus

    gap = 0.97 - accuracy
    loss = {
        "train": _curve(epochs, 2.2, 0.08 + gap, rng),
        "val": _curve(epochs, 2.1, 0.12 + gap, rng),
    }
    acc = {
        "train": _curve(epochs, 0.25, accuracy + 0.015, rng),
        "val": _curve(epochs, 0.3, accuracy, rng),
    }
    r.history = [
        {
            "epoch": e + 1,
            "train": {"loss": loss["train"][e], "accuracy": acc["train"][e]},
            "val": {"loss": loss["val"][e], "accuracy": acc["val"][e]},
        }
        for e in range(epochs)
    ]
    r.status = ResultStatus.FINISHED
    r.train_metrics = dict(r.history[-1]["train"])
    r.val_metrics = dict(r.history[-1]["val"])
    r.test_metrics = {"loss": loss["val"][-1] + 0.01, "accuracy": round(accuracy - 0.01, 4)}
    r.confusion_matrix = _matrix(accuracy - 0.01, rng)
    r.training_time_s = round(40.0 + 400 * gap, 1)
    r.progress = {"epoch": epochs, "epochs": epochs, "metrics": r.val_metrics}
    r.weights_uri = artifacts.put(
        settings.artifacts_uri, f"results/{r.id}/model.safetensors", b"weights of result %d" % r.id
    )


def seed_training(
    client,
    models: tuple[tuple[str, str], ...] = (("digits-cnn-pytorch", "pytorch"),),
    epochs: int = 8,
    status: str = "finished",
    name: str | None = None,
) -> dict[str, Any]:
    """Rows as a finished training of the digits leaves them, written directly: the models
    (unvalidated), a configuration, the accepted datasource, the deployment and one result
    per model with its per-epoch history, metrics, confusion matrix and weights file.

    Returns the ids: ``{"models": [...], "configuration", "datasource", "deployment",
    "results": [...]}``."""
    from kafkaml_ray.store import (
        Configuration,
        Datasource,
        DatasourceStatus,
        MLModel,
        ResultStatus,
        TrainingDeployment,
        TrainingResult,
        select,
    )

    rng = random.Random(len(models) * 100 + epochs)
    with client.store.session() as s:
        rows = []
        for model_name, framework in models:
            m = s.scalar(select(MLModel).where(MLModel.name == model_name))
            if m is None:
                m = MLModel(
                    name=model_name,
                    framework=framework,
                    code="...",
                    input_shape=[8, 8],
                    output_shape=[10],
                    param_count=38_282,
                )
                s.add(m)
            rows.append(m)
        s.flush()
        n = s.scalar(select(Datasource.id).order_by(Datasource.id.desc())) or 0
        config = Configuration(name=name or f"digits-{uuid.uuid4().hex[:6]}", models=rows)
        message = {
            "topic": "digits:0:0:1797",
            "input_format": "RAW",
            "input_config": DIGITS_CONFIG,
            "description": "digits",
            "validation_rate": 0.1,
            "test_rate": 0.1,
            "total_msg": 1797,
        }
        ds = Datasource(
            source_topic="KAFKA_ML_CONTROL_TOPIC",
            source_partition=0,
            source_offset=n,
            status=DatasourceStatus.ACCEPTED,
            topic=message["topic"],
            input_format="RAW",
            input_config=DIGITS_CONFIG,
            description="digits",
            validation_rate=0.1,
            test_rate=0.1,
            total_msg=1797,
            message=message,
        )
        s.add_all([config, ds])
        s.flush()
        dep = TrainingDeployment(
            configuration=config,
            batch_size=32,
            kwargs={
                fw: {"train": {"epochs": epochs}, "val": {}} for fw in ("pytorch", "tensorflow")
            },
            datasource_id=ds.id,
        )
        s.add(dep)
        s.flush()
        ds.deployment_id = dep.id
        results = []
        for i, m in enumerate(rows):
            r = TrainingResult(deployment=dep, model=m, status=ResultStatus(status))
            s.add(r)
            s.flush()
            if status == "finished":
                finish(r, client.settings, epochs, 0.97 - 0.03 * i, rng)
            results.append(r.id)
        return {
            "models": [m.id for m in rows],
            "configuration": config.id,
            "datasource": ds.id,
            "deployment": dep.id,
            "results": results,
        }


def table(at: AppTest, column: str) -> list[dict]:
    """The rows of the page's table that has ``column``."""
    frame = next(d.value for d in at.dataframe if column in d.value.columns)
    return frame.to_dict("records")


# -- models --------------------------------------------------------------------------------
@pytest.mark.integration
def test_models_register_an_example_list_edit_and_delete(ray_cluster, client, open_page, example):
    at = open_page("models")
    assert at.title[0].value == "Models"
    at.selectbox(key="add_example").select("digits_cnn_pytorch.py")
    at.button(key="add_load").click().run()
    assert at.text_area(key="add_code").value == example("digits_cnn_pytorch.py")
    assert at.radio(key="add_framework").value == "pytorch"
    assert example("digits_cnn_pytorch.py").strip() in [c.value for c in at.code]  # preview

    at.button(key="add_submit").click().run()
    assert not at.exception and not at.error
    assert at.success[0].value.startswith("Registered 'digits_cnn_pytorch': input [8, 8]")
    assert at.text_area(key="add_code").value == ""  # the form is cleared
    [row] = table(at, "parameters")
    assert (row["name"], row["framework"], row["input shape"]) == (
        "digits_cnn_pytorch",
        "PyTorch",
        "[8, 8]",
    )

    m = client.get_model("digits_cnn_pytorch")
    at.text_input(key=f"edit_desc_{m.id}").input("digits, 8x8").run()
    at.button(key="edit_save").click().run()
    assert at.success[0].value == "Saved 'digits_cnn_pytorch'."
    assert client.get_model(m.id).description == "digits, 8x8"

    at.button(key="edit_delete").click().run()
    assert at.success[0].value == "Deleted 'digits_cnn_pytorch'."
    assert client.list_models() == []
    assert at.info[0].value.startswith("No models yet")


@pytest.mark.integration
def test_models_refused_code_shows_the_error_at_its_line(ray_cluster, client, open_page):
    at = open_page("models")
    at.text_input(key="add_name").input("bad")
    at.text_area(key="add_code").input(BAD_CODE)
    at.button(key="add_submit").click().run()
    assert not at.exception
    assert at.error[0].value.startswith("line 2: syntax error")
    assert "> 2 |     def __init__(self)" in [c.value for c in at.code][-1]
    assert at.text_area(key="add_code").value == BAD_CODE  # kept for fixing
    assert client.list_models() == []


# -- configurations ------------------------------------------------------------------------
@pytest.mark.integration
def test_configurations_create_list_and_delete(ray_cluster, client, open_page, example):
    torch_model = client.add_model("torch-digits", "pytorch", example("digits_cnn_pytorch.py"))
    at = open_page("configurations")
    assert at.info[0].value.startswith("No configurations yet")
    at.text_input(key="config_name").input("digits")
    at.multiselect(key="config_models").select(torch_model.id)
    button(at, "Create").click().run()
    assert not at.exception and not at.error
    assert at.success[0].value == "Created 'digits' with torch-digits."
    assert table(at, "models")[0]["models"] == "torch-digits"
    assert at.text_input(key="config_name").value == ""

    used = open_page("models")  # a model in use cannot be deleted: one line, no traceback
    used.button(key="edit_delete").click().run()
    assert "is used by configuration 'digits'" in used.error[0].value
    assert not used.exception

    at.button(key="delete_config_submit").click().run()
    assert at.success[0].value == "Deleted 'digits'."
    assert client.list_configurations() == []


def test_configurations_need_a_model_first(settings, open_page):
    at = open_page("configurations")
    assert at.info[1].value == "Register a model on the Models page first."


def seed_tune(client, status: str = "finished", on: dict | None = None) -> dict[str, Any]:
    """A finished Ray Tune search as `run_tune` leaves it: three trials (one failed), the
    best one marked, on the first model and the datasource of ``on`` (`seed_training`'s
    ids; a new waiting deployment by default). Returns its id, its datasource and the
    trials' result ids."""
    from kafkaml_ray.store import ResultStatus, TrainingResult, TuneRun

    ids = on or seed_training(client, status="waiting")
    rng = random.Random(3)
    space = {"lr": {"loguniform": [0.0001, 0.01]}, "batch_size": {"choice": [16, 32]}, "epochs": 4}
    trials = [
        ({"lr": 0.003, "batch_size": 16, "epochs": 4}, 0.95),
        ({"lr": 0.0002, "batch_size": 32, "epochs": 4}, 0.81),
    ]
    with client.store.session() as s:
        run = TuneRun(
            model_id=ids["models"][0],
            datasource_id=ids["datasource"],
            space=space,
            metric="val_accuracy",
            mode="max",
            num_samples=3,
            status=status,
        )
        s.add(run)
        s.flush()
        results = []
        for params, accuracy in trials:
            r = TrainingResult(model_id=run.model_id, tune_id=run.id, hyperparameters=params)
            s.add(r)
            s.flush()
            finish(r, client.settings, 4, accuracy, rng)
            results.append(r)
        results[0].best = status == "finished"
        failed = TrainingResult(
            model_id=run.model_id,
            tune_id=run.id,
            hyperparameters={"lr": 0.009, "batch_size": 32, "epochs": 4},
            status=ResultStatus.FAILED,
            error="RuntimeError: loss is nan",
        )
        s.add(failed)
        s.flush()
        return {
            "tune": run.id,
            "datasource": ids["datasource"],
            "model": ids["models"][0],
            "results": [r.id for r in results] + [failed.id],
        }


# -- training ------------------------------------------------------------------------------
def test_training_deploys_a_configuration_and_shows_its_waiting_results(client, open_page):
    from conftest import add_model_unvalidated

    torch_id = add_model_unvalidated(client, "torch-digits", "pytorch")
    keras_id = add_model_unvalidated(client, "keras-digits", "tensorflow")
    client.create_configuration("pair", [torch_id, keras_id])
    at = open_page("training")
    assert at.info[0].value == "No deployments yet: deploy a configuration above."
    at.number_input(key="train_batch").set_value(16)
    at.text_input(key="train_kwargs_pytorch").input("epochs=five")
    button(at, "Deploy").click().run()
    assert at.error[0].value.startswith("training argument epochs: five is not a literal")
    assert client.list_deployments() == []

    at.text_input(key="train_kwargs_pytorch").input("epochs=3, lr=0.01")
    at.text_input(key="train_val_tensorflow").input("batch_size=256")
    at.checkbox(key="train_matrix").uncheck()
    at.toggle(key="train_follow")  # exists; left off
    button(at, "Deploy").click().run()
    assert not at.exception and not at.error
    [dep] = client.list_deployments()
    assert at.success[0].value == (
        f"Deployed 'pair' as deployment {dep.id}: 2 model(s) wait for a control message "
        f"with deployment_id {dep.id}."
    )
    assert (dep.batch_size, dep.confusion_matrix) == (16, False)
    assert dep.kwargs["pytorch"]["train"] == {"epochs": 3, "lr": 0.01}
    assert dep.kwargs["tensorflow"]["val"] == {"batch_size": 256}
    [row] = table(at, "configuration")
    assert (row["deployment"], row["state"], row["batch size"]) == (dep.id, "2 waiting", 16)
    assert "pytorch: epochs=3, lr=0.01" in row["training arguments"]
    results = table(at, "epoch")
    assert [(r["model"], r["status"]) for r in results] == [
        ("torch-digits", "waiting"),
        ("keras-digits", "waiting"),
    ]
    assert f"deployment_id {dep.id}" in at.info[0].value
    assert dep.online is None

    at.checkbox(key="train_online").check()  # online options, as `train deploy --online`
    at.number_input(key="on_n").set_value(200)
    at.text_input(key="on_metric").input("accuracy")
    at.selectbox(key="on_change").select("up")
    button(at, "Deploy").click().run()
    assert not at.exception and not at.error
    online = client.list_deployments()[-1].online
    assert (online["window_messages"], online["monitoring_metric"], online["change"]) == (
        200,
        "accuracy",
        "up",
    )
    assert online["stream_timeout_s"] == 60.0  # the default


def test_training_shows_progress_and_the_stored_error(client, open_page):
    from kafkaml_ray.store import ResultStatus, TrainingResult

    ids = seed_training(
        client, (("torch-digits", "pytorch"), ("keras-digits", "tensorflow")), status="waiting"
    )
    with client.store.session() as s:
        training, failed = (s.get_one(TrainingResult, i) for i in ids["results"])
        training.status = ResultStatus.TRAINING
        training.progress = {"epoch": 2, "epochs": 4, "batch": 5, "batches": 10, "metrics": {}}
        failed.status, failed.error = ResultStatus.FAILED, "reading the data stream failed: boom"
    at = open_page("training")
    assert not at.exception
    [bar] = at.get("progress")
    assert bar.proto.value == 37  # (2 - 1 + 5/10) of 4 epochs
    assert bar.proto.text == "torch-digits: epoch 2 of 4, batch 5 of 10"
    assert at.error[0].value == "keras-digits: reading the data stream failed: boom"
    assert "Stop this deployment" in [b.label for b in at.button]


# -- results -------------------------------------------------------------------------------
def test_results_table_compare_download_delete_and_deploy(client, open_page):
    ids = seed_training(client, (("torch-digits", "pytorch"), ("keras-digits", "tensorflow")))
    first, second = ids["results"]
    at = open_page("results")
    rows = {r["result"]: r for r in table(at, "test accuracy")}
    assert set(rows) == {first, second}
    r = client.get_result(first)
    assert rows[first]["test accuracy"] == pytest.approx(r.test_metrics["accuracy"])
    assert rows[first]["val loss"] == pytest.approx(r.val_metrics["loss"])
    assert (rows[first]["model"], rows[first]["status"]) == ("torch-digits", "finished")
    assert rows[second]["training time (s)"] == pytest.approx(52.0)

    at.multiselect(key="results_compare").select(first).select(second).run()
    compared = next(d.value for d in at.dataframe if d.value.index.name == "metric")
    assert list(compared.columns) == [f"{first} · torch-digits", f"{second} · keras-digits"]
    assert compared.loc["test accuracy"].tolist() == [
        pytest.approx(client.get_result(i).test_metrics["accuracy"]) for i in (first, second)
    ]
    [download] = at.get("download_button")
    assert download.proto.label == "Download weights"
    assert download.proto.deferred_file_id  # read when clicked (the browser test fetches it)
    assert not download.proto.disabled

    at.selectbox(key="results_act").select(second).run()
    at.button(key="results_delete").click().run()
    assert at.success[0].value == f"Deleted result {second} (keras-digits)."
    assert [r.id for r in client.list_results()] == [first]

    at.button(key="results_deploy").click().run()  # opens the inference form for it
    assert not at.exception
    assert at.title[0].value == "Inference"
    assert at.selectbox(key="infer_result").value == first
    assert json.loads(at.text_area(key="infer_config").value) == {
        "data_type": "float32",
        "data_reshape": "8 8",
    }
    assert at.text_input(key="infer_input").value == f"inference-{first}-in"


def test_results_are_filtered_by_lineage_drawn_as_a_graph_and_tagged(client, open_page):
    from kafkaml_ray.lineage import record
    from kafkaml_ray.model_code import model_version
    from kafkaml_ray.store import Datasource, TrainingResult

    ids = seed_training(client, (("torch-digits", "pytorch"), ("keras-digits", "tensorflow")))
    first, second = ids["results"]
    with client.store.session() as s:
        ds = s.get_one(Datasource, ids["datasource"])
        for rid, lr in [(first, 0.01), (second, 0.001)]:
            r = s.get_one(TrainingResult, rid)
            r.model_version = model_version(s, r.model)
            r.lineage = record(
                ds, model=r.model, version=r.model_version, params={"batch_size": 32, "lr": lr},
                on_malformed="fail", deployment=r.deployment,
            )  # fmt: skip
    at = open_page("results")
    at.text_input(key="results_f_param").input("lr=0.001").run()
    assert [r["result"] for r in table(at, "test accuracy")] == [second]
    at.text_input(key="results_f_param").input("lr=").run()
    at.text_input(key="results_f_metric").input("accuracy is high").run()
    assert "expected NAME>=X" in at.error[0].value  # said, and nothing filtered
    assert {r["result"] for r in table(at, "test accuracy")} == {first, second}
    at.text_input(key="results_f_metric").input("").run()
    at.text_input(key="results_f_param").input("").run()

    at.multiselect(key="results_compare").select(first).select(second).run()
    came = next(d.value for d in at.dataframe if d.value.index.name == "came from")
    assert came.loc["lr"].tolist() == ["0.01", "0.001"]
    assert came.loc["datasource"].tolist() == [str(ids["datasource"])] * 2

    at.selectbox(key="results_act").select(first).run()
    [graph] = at.get("graphviz_chart")
    assert (
        f'"datasource-{ids["datasource"]}" -> "deployment-{ids["deployment"]}"' in graph.proto.spec
    )
    assert f'URL="results?result={first}"' in graph.proto.spec
    at.text_input(key=f"results_tags_{first}").input("candidate, digits").run()
    at.text_area(key=f"results_notes_{first}").input("the one to ship").run()
    at.button(key="results_annotate").click().run()
    r = client.get_result(first)
    assert (r.tags, r.notes) == (["candidate", "digits"], "the one to ship")
    at.text_input(key="results_f_text").input("ship").run()
    assert [r["result"] for r in table(at, "test accuracy")] == [first]


# -- charts --------------------------------------------------------------------------------
def test_charts_draw_learning_curves_and_the_confusion_matrix(client, open_page):
    ids = seed_training(
        client, (("torch-digits", "pytorch"), ("keras-digits", "tensorflow")), epochs=6
    )
    first, second = ids["results"]
    at = open_page("charts")  # the latest deployment's results
    assert sorted(at.multiselect(key="charts_results").value) == [first, second]
    at.multiselect(key="charts_results").unselect(first).run()
    specs = charts(at)
    titles = [s.get("title") for s in specs]
    assert titles[:2] == ["loss", "accuracy"]
    curve = specs[0]
    assert curve["mark"]["type"] == "line" and curve["mark"]["point"] is True
    assert curve["encoding"]["strokeDash"]["field"] == "subset"
    matrix = specs[2]
    assert [layer["mark"]["type"] for layer in matrix["layer"]] == ["rect", "text"]
    assert matrix["title"] == f"{second} · keras-digits: test set"

    at.multiselect(key="charts_results").select(first).run()
    assert sorted(at.multiselect(key="charts_results").value) == [first, second]
    at.selectbox(key="charts_matrix").select(first).run()
    at.toggle(key="charts_normalize").set_value(True).run()
    matrix = charts(at)[2]
    assert matrix["title"] == f"{first} · torch-digits: test set"
    assert matrix["layer"][1]["encoding"]["text"]["format"] == ".0%"
    assert not at.exception


def test_charts_without_results_say_so(settings, open_page):
    assert open_page("charts").info[0].value.startswith("No result has a learning curve yet")


def test_online_shows_the_prequential_curve_versions_and_what_serves_them(client, open_page):
    """An online result's windows (seeded as a run leaves them): the prequential and
    validation curves over windows with the published versions marked, the versions, and
    the inferences that serve it (following, or pinned)."""
    from kafkaml_ray.store import (
        Inference,
        InferenceStatus,
        OnlineWindow,
        ResultStatus,
        ResultVersion,
        TrainingResult,
    )

    ids = seed_training(client, status="training")
    rid = ids["results"][0]
    with client.store.session() as s:
        s.get(TrainingResult, rid).status = ResultStatus.TRAINING
        for n, acc in enumerate([0.2, 0.6, 0.55, 0.8], start=1):
            version = {1: 1, 2: 2, 4: 3}.get(n)
            s.add(
                OnlineWindow(
                    result_id=rid,
                    window=n,
                    messages=100,
                    prequential={"accuracy": acc, "loss": 2 - acc},
                    val={"accuracy": acc + 0.05},
                    offsets={"digits:0": [100 * (n - 1), 100 * n]},
                    version=version,
                )
            )
            if version:
                s.add(
                    ResultVersion(
                        result_id=rid,
                        version=version,
                        window=n,
                        metrics={
                            "accuracy": acc + 0.05,
                            "monitored": acc + 0.05,
                            **({"previous": acc - 0.1} if version > 1 else {}),
                        },
                        offsets={"digits:0": 100 * n},
                        weights_uri=f"/tmp/v{version}",
                    )
                )
        for follow, version in ((True, None), (False, 2)):
            s.add(
                Inference(
                    result_id=rid,
                    input_topic=f"in-{follow}",
                    output_topic=f"out-{follow}",
                    status=InferenceStatus.RUNNING,
                    follow=follow,
                    version=version,
                )
            )
    at = open_page("online")
    assert [m.value for m in at.metric][:2] == ["4", "400"]
    specs = charts(at)
    titles = ["loss", "accuracy", "Versions compared on the same held-out data"]
    assert [spec["title"] for spec in specs] == titles
    lines, rules, labels = specs[0]["layer"]
    compared = specs[2]
    assert compared["mark"]["type"] == "bar" and compared["encoding"]["xOffset"]["field"] == "model"
    assert lines["encoding"]["strokeDash"]["field"] == "subset"
    assert rules["mark"]["type"] == "rule" and labels["mark"]["type"] == "text"
    assert labels["encoding"]["text"]["field"] == "version"  # (windows 1, 2, 4: a doctest)
    versions, served = at.dataframe[0].value, at.dataframe[1].value
    assert list(versions["version"]) == [3, 2, 1]
    assert sorted(served["serves"]) == ["its newest version (follows)", "version 2"]
    assert button(at, "Stop")
    assert not at.exception


def test_online_without_runs_says_so(settings, open_page):
    assert open_page("online").info[0].value.startswith("No online run yet")


# -- datasources ---------------------------------------------------------------------------
@pytest.mark.integration
def shown(markdown: str) -> str:
    """What Markdown source with backslash escapes shows."""
    return re.sub(r"\\(.)", r"\1", markdown)


def _hold_in_kafka(settings, topic: str, n: int) -> None:
    """At least ``n`` messages in partition 0 of ``topic`` (what a seeded range names)."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer = Consumer(settings.kafka_config(**{"group.id": uuid.uuid4().hex}))
    try:
        high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    except Exception:  # noqa: BLE001 - no such topic yet
        high = 0
    consumer.close()
    producer = Producer(settings.kafka_config())
    for _ in range(max(0, n - high)):
        producer.produce(topic, b"\0" * 256, b"\0", partition=0)
    producer.flush(30)


def test_datasources_list_and_resend_to_another_deployment(broker, client, settings, open_page):
    from confluent_kafka import Consumer

    from kafkaml_ray.store import Datasource, DatasourceStatus

    ids = seed_training(client)
    _hold_in_kafka(settings, "digits", 1797)  # the seeded stream's data, so not expired
    again = client.deploy_training(ids["configuration"], kwargs="epochs=2")
    with client.store.session() as s:
        s.add(
            Datasource(
                source_topic=settings.control_topic,
                source_partition=0,
                source_offset=99,
                status=DatasourceStatus.REFUSED,
                error="topic range 'digits:x:0:10' has a part that is not a number",
                message={"topic": "digits:x:0:10"},
            )
        )
    at = open_page("datasources")
    rows = {r["datasource"]: r for r in table(at, "ranges")}
    ds = rows[ids["datasource"]]
    assert (ds["ranges"], ds["messages"], ds["skipped (malformed)"]) == (
        "digits[0] 0-1797",
        1797,
        0,
    )
    assert (ds["status"], ds["deployment"], ds["format"]) == ("accepted", ids["deployment"], "RAW")
    refused = "Refused: topic range 'digits:x:0:10' has a part that is not a number"
    assert [shown(e.value) for e in at.error] == [refused]  # the newest is shown first
    assert "\\:" in at.error[0].value  # its text is escaped: shown literally, not as Markdown

    assert at.selectbox(key="ds_deployment").value == again.id  # the waiting one first
    button(at, "Re-send").click().run()
    assert not at.exception and [shown(e.value) for e in at.error] == [refused]
    assert at.success[0].value == (
        f"Re-sent datasource {ids['datasource']} to deployment {again.id}: it trains when "
        "the control listener reads it."
    )
    consumer = Consumer(
        settings.kafka_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([settings.control_topic])
    try:
        message = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and not message.error():
                break
        assert message is not None and not message.error()
        assert int.from_bytes(message.key(), "big") == again.id
        assert json.loads(message.value())["topic"] == "digits:0:0:1797"
    finally:
        consumer.close()


def test_datasources_resend_without_kafka_says_so(client, open_page, no_backend):
    seed_training(client)
    at = open_page("datasources")
    button(at, "Re-send").click().run()
    assert at.error[0].value.startswith("Cannot send the control message: kafka is not running")
    assert not at.exception


# -- inference -----------------------------------------------------------------------------
def test_inference_form_checks_its_input_before_any_back_end(client, open_page, no_backend):
    ids = seed_training(client)
    at = open_page("inference")
    (result,) = ids["results"]
    assert at.selectbox(key="infer_result").value == result
    assert at.selectbox(key="infer_format").value == "RAW"
    assert at.toggle(key="infer_exactly_once").value is False  # (at least once by default)
    at.text_input(key="infer_output").input(f"inference-{result}-in")
    at.button(key="infer_deploy").click().run()
    assert at.error[0].value == "The input and output topics must differ."

    at.text_input(key="infer_output").input("predictions")
    at.text_area(key="infer_config").input('{"data_type": "float32",')
    at.button(key="infer_deploy").click().run()
    assert at.error[0].value.startswith("The input config is not valid JSON")

    at.text_area(key="infer_config").input('{"data_type": "float32"}')
    at.radio(key="infer_scaling").set_value("auto").run()
    at.number_input(key="infer_min").set_value(3)
    at.number_input(key="infer_max").set_value(2)
    at.button(key="infer_deploy").click().run()
    assert at.error[0].value == "Min replicas (3) is more than max replicas (2)."

    at.number_input(key="infer_max").set_value(4)
    at.button(key="infer_deploy").click().run()
    assert at.error[0].value.startswith("Cannot deploy the inference: kafka is not running")
    assert client.list_inferences() == []
    assert not at.exception


def seed_inference(
    client, result_id: int, output_topic: str, status: str = "running", error: str | None = None
) -> int:
    """An inference row as a running one leaves it, with a replica's recent figures."""
    from kafkaml_ray.store import Inference, InferenceStatus, ReplicaStats

    with client.store.session() as s:
        inf = Inference(
            result_id=result_id,
            input_topic=f"{output_topic}-in",
            output_topic=output_topic,
            input_config={"data_type": "float32", "data_reshape": "8 8"},
            replicas=2,
            status=InferenceStatus(status),
            error=error,
        )
        s.add(inf)
        s.flush()
        for n, lag in enumerate((3, 4)):
            s.add(
                ReplicaStats(
                    inference_id=inf.id,
                    replica=f"replica-{n}",
                    consumed=100,
                    predicted=99,
                    dead_letters=1,
                    lag=lag,
                    msgs_per_s=20.5,
                )
            )
        return inf.id


def produce_predictions(settings, topic: str, count: int, classes: int = 10) -> None:
    """Predictions as the ingress writes them, and one dead letter."""
    from confluent_kafka import Producer

    rng = random.Random(7)
    producer = Producer(settings.kafka_config())
    for n in range(count):
        scores = [rng.random() * 0.1 for _ in range(classes)]
        scores[n % classes] = 1.0
        total = sum(scores)
        value = json.dumps({"values": [v / total for v in scores]})
        producer.produce(topic, value.encode(), f"sample-{n}".encode())
    producer.produce(
        f"{topic}.dlq", b"\x00\x01", b"bad", headers=[("error", b"cannot reshape 2 bytes")]
    )
    assert producer.flush(30) == 0


@pytest.mark.integration
def test_inference_lists_and_shows_the_latest_predictions(broker, client, settings, open_page):
    ids = seed_training(client)
    topic = f"predictions-{uuid.uuid4().hex[:8]}"
    inference = seed_inference(client, ids["results"][0], topic)
    produce_predictions(settings, topic, 12)

    at = open_page("inference")
    [row] = table(at, "dead letters")
    assert (row["inference"], row["status"], row["replicas"]) == (
        inference,
        "running",
        "2 live of 2",
    )
    assert (row["lag"], row["msgs/s"], row["consumed"], row["dead letters"]) == (7, 41.0, 200, 2)
    at.number_input(key="tap_n").set_value(5).run()
    assert not at.exception, at.exception
    live = table(at, "confidence")
    assert [r["key"] for r in live] == [f"sample-{n}" for n in (11, 10, 9, 8, 7)]
    assert [r["class"] for r in live] == [1, 0, 9, 8, 7]
    assert all(0.5 < r["confidence"] < 1 for r in live)
    assert charts(at)[0]["title"] == "predicted classes"

    at.toggle(key="tap_dead").set_value(True).run()
    [dead] = table(at, "offset")
    assert (dead["key"], dead["error"]) == ("bad", "cannot reshape 2 bytes")
    at.button(key="tap_refresh").click().run()
    assert not at.exception


def test_inference_actions_without_ray_say_so(client, open_page, no_backend):
    ids = seed_training(client)
    seed_inference(client, ids["results"][0], "out", "failed", "replica died: out of memory")
    at = open_page("inference")
    assert at.error[0].value == "Failed: replica died: out of memory"
    at.button(key="infer_restart").click().run()
    assert at.error[-1].value.startswith("Cannot restart the inference: ray is not running")
    assert at.warning[0].value == "Kafka is not running: no predictions to read."


# -- tuning --------------------------------------------------------------------------------
def test_tuning_checks_the_search_before_any_back_end(client, open_page, no_backend):
    seed_training(client)
    at = open_page("tuning")
    assert at.info[-1].value == "No searches yet: start one above."
    at.text_area(key="tune_space").input('{"lr": ')
    button(at, "Start the search").click().run()
    assert at.error[0].value.startswith("The search space is not valid JSON")
    at.text_area(key="tune_space").input('{"epochs": {"normal": [1, 3]}}')
    button(at, "Start the search").click().run()
    assert at.error[0].value.startswith(
        "search space 'epochs': {'normal': [1, 3]} is not one sampler of choice, grid"
    )
    at.text_area(key="tune_space").input('{"learning_rate": {"loguniform": [0.001, 0.01]}}')
    button(at, "Start the search").click().run()
    assert at.error[0].value.startswith("Cannot start the search: ray is not running")
    assert client.list_tunes() == []
    assert not at.exception


def test_tuning_shows_the_trials_best_first_and_deploys_the_best(client, open_page):
    ids = seed_tune(client)
    best, second, failed = ids["results"]
    at = open_page("tuning")
    [run] = table(at, "trials")
    assert (run["search"], run["status"], run["trials"]) == (ids["tune"], "finished", "3 done of 3")
    assert run["best"].startswith(f"result {best}: val_accuracy 0.9")
    trials = table(at, "epochs done")
    assert [(t["best"], t["result"], t["status"]) for t in trials] == [
        ("★", best, "finished"),
        ("", second, "finished"),
        ("", failed, "failed"),
    ]
    assert (trials[0]["lr"], trials[0]["batch_size"], trials[0]["epochs done"]) == (0.003, 16, 4)
    assert trials[0]["val_accuracy"] > trials[1]["val_accuracy"]
    assert trials[2]["error"] == "RuntimeError: loss is nan"
    [curves] = charts(at)
    assert curves["title"] == "val_accuracy"

    button(at, "Deploy the best for inference").click().run()
    assert at.title[0].value == "Inference"
    assert at.selectbox(key="infer_result").value == best
    assert json.loads(at.text_area(key="infer_config").value)["data_reshape"] == "8 8"
    assert not at.exception


def test_tuning_shows_why_a_search_failed(client, open_page):
    from kafkaml_ray.store import TuneRun

    ids = seed_tune(client, status="failed")
    with client.store.session() as s:
        s.get_one(TuneRun, ids["tune"]).error = "no trial reported metric 'val_f1'"
    at = open_page("tuning")
    assert at.error[0].value == "Failed: no trial reported metric 'val_f1'"
    assert table(at, "trials")[0]["best"] == ""


def test_tuning_deletes_a_search_and_stops_one_only_with_ray(client, open_page, no_backend):
    from kafkaml_ray.store import TuneRun

    on = seed_training(client, status="waiting")
    ids = seed_tune(client, on=on)
    at = open_page("tuning")
    assert at.button(key="tune_stop").disabled and not at.button(key="tune_delete").disabled
    at.button(key="tune_delete").click().run()
    assert at.success[0].value == f"Deleted search {ids['tune']} and its 3 trial result(s)."
    assert client.list_tunes() == []
    assert not {r.id for r in client.list_results()} & set(ids["results"])

    running = seed_tune(client, status="running", on=on)
    at = open_page("tuning")
    assert at.button(key="tune_delete").disabled
    at.button(key="tune_stop").click().run()
    assert at.error[-1].value.startswith("Cannot stop the search: ray is not running")
    with client.store.session() as s:
        assert s.get_one(TuneRun, running["tune"]).status == "running"  # nothing changed
    assert not at.exception


# -- cluster -------------------------------------------------------------------------------
@pytest.mark.integration
def test_cluster_shows_a_topic_of_the_broker_and_ray(broker, ray_cluster, settings, open_page):
    from confluent_kafka import Producer

    topic = f"ui-{uuid.uuid4().hex[:8]}"
    producer = Producer(settings.kafka_config())
    producer.produce(topic, b"one")
    producer.produce(topic, b"two")
    assert producer.flush(30) == 0

    at = open_page("cluster")
    assert not at.warning, [w.value for w in at.warning]
    topics = {r["topic"]: r for r in table(at, "topic")}
    assert (topics[topic]["partitions"], topics[topic]["end offsets"]) == (1, "0: 2")
    parts = {r["part"]: r["state"] for r in table(at, "part")}
    assert parts["kafka"] == parts["ray"] == "running"
    assert at.metric[0].label == "CPU in use"
    assert at.metric[0].value.endswith("of 4")


# -- the sidebar, the password rule and the command ----------------------------------------
def test_no_pages_directory_beside_the_app():
    """Streamlit runs the scripts of a ``pages/`` directory beside the entry script by
    themselves (multipage v1) until a session has called ``st.navigation``: on a fresh
    server ``/models`` would skip ``app.py`` and its password gate."""
    assert not (Path(APP).parent / "pages").exists()


def test_the_panel_imports_no_model_framework():
    """No model code in the Streamlit process: what the panel's scripts import leaves
    PyTorch and TensorFlow out (the Client runs them in Ray workers)."""
    import ast
    import subprocess
    import sys

    modules = set()
    for path in Path(APP).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module)  # and names that are modules (from ... import common)
                modules.update(f"{node.module}.{a.name}" for a in node.names)
    code = (
        "import importlib, importlib.util, sys\n"
        f"for m in {sorted(modules)!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ModuleNotFoundError:\n"
        "        pass  # a name, not a module\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
    assert {"kafkaml_ray.ui.common", "kafkaml_ray.ui.charts", "kafkaml_ray.train.tune"} <= modules


def test_sidebar_shows_the_stack_state(settings, open_page):
    text = " ".join(m.value for m in open_page().sidebar.markdown)
    assert "**kafka**" in text and "**ray**" in text


def test_without_a_password_the_panel_refuses(open_page, served_at, monkeypatch, tmp_path):
    served_at("0.0.0.0")
    monkeypatch.setenv("KAFKAML_HOME", str(tmp_path))  # (no password file made there)
    at = open_page(signed_in=False)
    assert "This panel has no password" in at.error[0].value
    assert not at.text_area and not at.dataframe


def test_the_panel_asks_for_its_password_on_127_0_0_1(
    settings, open_page, capsys, monkeypatch, tmp_path
):
    """Any local account of a shared host reaches 127.0.0.1, and the panel registers model
    code that runs as the stack's owner: it asks for a password there too. The first start
    makes one, readable by the owner alone, and prints it once."""
    from kafkaml_ray.panel import password_file, show_new_password

    monkeypatch.setenv("KAFKAML_HOME", str(tmp_path))  # (a home of its own: a first start)
    settings = settings.model_copy(update={"home": tmp_path})
    show_new_password(settings)
    path = password_file(settings)
    password = path.read_text().strip()
    assert oct(path.stat().st_mode & 0o777) == "0o600" and len(password) >= 16
    assert f"control panel password: {password}" in capsys.readouterr().err
    show_new_password(settings)  # (once)
    assert capsys.readouterr().err == "" and path.read_text().strip() == password
    at = open_page(signed_in=False)
    assert at.title[0].value == "kafkaml-ray" and not at.text_area and not at.dataframe
    at.text_input(key="_kml_password").input("wrong")
    button(at, "Sign in").click().run()
    assert at.error[0].value == "wrong password"
    at.text_input(key="_kml_password").input(password)
    button(at, "Sign in").click().run()
    assert not at.exception
    assert at.title[0].value == "Models"


def test_off_loopback_the_panel_asks_for_the_password(settings, open_page, served_at):
    served_at("0.0.0.0")
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["password"] = "s3cret"
    at.run()
    at.text_input(key="_kml_password").input("wrong")
    button(at, "Sign in").click().run()
    assert at.error[0].value == "wrong password"
    assert at.title[0].value == "kafkaml-ray"
    at.text_input(key="_kml_password").input("s3cret")
    button(at, "Sign in").click().run()
    assert not at.exception
    assert at.title[0].value == "Models"


def test_the_ui_command_refuses_another_address_without_a_password(monkeypatch, tmp_path):
    monkeypatch.delenv("KAFKAML_UI_PASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(ui_command, ["--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: the control panel would listen on 0.0.0.0: set ")
    assert len(result.output.strip().splitlines()) == 1
    assert (is_loopback("::1"), is_loopback("localhost"), is_loopback(None)) == (True, True, False)
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('other = "x"\n')
    with pytest.raises(InvalidInput):
        serve_ui(Settings(home=tmp_path), host="0.0.0.0", background=True)


def _websocket_handshake(port: int, host: str) -> int:
    """The HTTP status of a WebSocket handshake to the panel's stream with this Host."""
    import base64
    import socket

    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: streamlit\r\nOrigin: http://{host}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        return int(sock.recv(4096).split()[1])


def test_start_status_and_stop_as_a_part_of_the_stack(settings):
    from conftest import free_ports

    settings = settings.model_copy(update={"ui_port": free_ports(1)})
    assert not ui_status(settings).running
    try:
        part = start_ui(settings)
        assert part.running and part.address == f"http://127.0.0.1:{settings.ui_port}"
        assert start_ui(settings) == part  # harmless twice
        # DNS rebinding: a page at evil.example resolved to 127.0.0.1 cannot open the
        # panel's WebSocket (its Host is refused), while the local names can.
        port = settings.ui_port
        assert _websocket_handshake(port, f"127.0.0.1:{port}") == 101
        assert _websocket_handshake(port, f"localhost:{port}") == 101
        assert _websocket_handshake(port, f"evil.example:{port}") == 403
    finally:
        assert stop_ui(settings)
    assert not ui_status(settings).running
    assert not stop_ui(settings)
