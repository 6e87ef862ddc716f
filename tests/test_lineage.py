"""Lineage: each result keeps what it came from (datasource, code version, parameters,
weights, libraries) and what came of it (versions, inferences, reproductions); results are
found and compared by it, drawn as a tree, and reproduced. On the real broker and Ray,
except the filter checks at the top."""

import hashlib
import json
import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st

from kafkaml_ray.results import ResultFilter, compare
from kafkaml_ray.schemas import ResultInfo
from tests.conftest import EXAMPLES, add_model_unvalidated, running_listener
from tests.serve.test_inference import read_all
from tests.train.test_training import digits_data, regression_data, send_stream


def _info(**fields) -> ResultInfo:
    base = dict(
        id=1, deployment_id=None, model_id=1, model_name="m", framework="pytorch",
        status="finished", error=None, train_metrics={"loss": 0.5}, val_metrics={},
        test_metrics={"accuracy": 0.9}, history=[], progress={}, confusion_matrix=None,
        training_time_s=1.0, weights_uri=None, confusion_matrix_uri=None, hyperparameters={},
        tune_id=None, best=False, created_at="2026-12-05T00:00:00",
        updated_at="2026-12-05T00:00:00",
    )  # fmt: skip
    return ResultInfo(**(base | fields))


def test_a_filter_matches_on_every_field_it_names():
    r = _info(
        lineage={
            "recorded_at": "2026-12-05T00:00:00+00:00", "framework": "pytorch",
            "datasource": {"id": 3, "topic": "digits:0:0:900,more:1:0:5"},
        },
        datasource_id=3, params={"lr": 0.01, "epochs": 5}, tags=["candidate"],
        notes="the one we ship", model_version=2,
    )  # fmt: skip
    for hit in [
        {}, {"datasource_id": 3}, {"topic": "more"}, {"params": {"lr": 0.01, "epochs": 5.0}},
        {"metrics": {"test_accuracy": (0.9, None), "loss": (None, 0.5)}}, {"tag": "candidate"},
        {"text": "SHIP"}, {"code_version": 2}, {"model": "m", "framework": "pytorch"},
    ]:  # fmt: skip
        assert ResultFilter(**hit).matches(r), hit
    for miss in [
        {"datasource_id": 4}, {"topic": "digit"}, {"params": {"lr": 0.1}}, {"params": {"x": 1}},
        {"metrics": {"test_accuracy": (0.95, None)}}, {"metrics": {"val_loss": (None, 9)}},
        {"tag": "cand"}, {"code_version": 1}, {"status": "failed"}, {"framework": "tensorflow"},
    ]:  # fmt: skip
        assert not ResultFilter(**miss).matches(r), miss


def test_the_lineage_record_is_frozen_typed_and_round_trips_its_json():
    """What the store keeps reads back equal; nothing assigns to it; a script that read
    the old dict by key still runs, warned."""
    from pydantic import ValidationError

    from kafkaml_ray.lineage_record import Lineage

    stored = {
        "recorded_at": "2026-12-07T10:00:00+00:00", "framework": "sklearn",
        "datasource": {"id": 3, "topic": "digits:0:0:900", "messages": 900},
        "split": {"shuffle_seed": 7, "on_malformed": "skip", "sizes": {"train": 720}},
        "code": {"model": "sgd", "version": 2, "sha256": "ab" * 32, "code": "model = ..."},
        "params": {"batch_size": 32, "model.alpha": 0.001},
        "weights": {"uri": "file:///w/model.skops", "sha256": "cd" * 32, "bytes": 10},
        "libraries": {"scikit-learn": "1.9.0"},
    }  # fmt: skip
    lin = Lineage.of(stored)
    assert Lineage.of(lin.as_json()) == lin and Lineage.of(None) is None and Lineage.of({}) is None
    assert (lin.datasource.topic, lin.split.sizes, lin.weights.bytes) == (
        "digits:0:0:900",
        {"train": 720},
        10,
    )
    with pytest.raises(ValidationError):
        lin.framework = "pytorch"
    split = lin.with_split(sizes={"train": 1}, malformed=2)
    assert (split.split.sizes, split.datasource.malformed, lin.split.sizes) == (
        {"train": 1},
        2,
        {"train": 720},
    )
    with pytest.warns(DeprecationWarning, match=r"read result.lineage.datasource"):
        assert lin["datasource"]["topic"] == "digits:0:0:900"
    with pytest.warns(DeprecationWarning):
        assert lin.get("params") == stored["params"] and lin.get("nothing", 1) == 1


@given(
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.floats(), st.text())),
    st.dictionaries(st.text(max_size=5), st.one_of(st.integers(), st.floats(), st.text())),
)
def test_compare_marks_exactly_the_parameters_that_differ(a, b):
    compared = compare([_info(params=a), _info(params=b)])
    rows = {row["name"]: row for row in compared if row["kind"] == "param"}
    assert len(rows) == len(a.keys() | b.keys())
    for key in a.keys() | b.keys():
        values = [a.get(key), b.get(key)]
        assert rows[key]["values"] == values
        assert rows[key]["differs"] == (repr(values[0]) != repr(values[1]))


# -- on the broker and Ray -----------------------------------------------------------------
def _cli(settings):
    from kafkaml_ray.cli import cli

    env = {k: v for k, v in settings.env().items() if v is not None}

    def run(*args: str) -> str:
        r = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    return run


@pytest.mark.integration
def test_a_tuned_then_served_result_has_its_whole_lineage_and_is_found_by_it(
    ray_cluster, broker, client, settings, topic, tmp_path, monkeypatch
):
    from kafkaml_ray import artifacts
    from kafkaml_ray.model_code import code_sha256

    code = (EXAMPLES / "regression_mlp_pytorch.py").read_text()
    add_model_unvalidated(client, "mlp", "pytorch", code)
    config = client.create_configuration("mlp", ["mlp"])
    dep = client.deploy_training(config.id, batch_size=16, kwargs="epochs=1")
    x, y = regression_data(400)
    with running_listener(settings):
        send_stream(settings, topic, dep.id, x, y)
        dep = client.wait_for_deployment(dep.id, timeout=300)
    trained = dep.results[0]
    assert trained.status == "finished", trained.error
    assert trained.datasource_id == dep.datasource_id and trained.params == {
        "batch_size": 16,
        "epochs": 1,
    }
    # A search on the same datasource; its best trial is served, then stopped.
    space = {"lr": {"grid": [0.01, 0.001]}, "epochs": 1}
    t = client.tune("mlp", trained.datasource_id, space, "val_loss", mode="min", num_samples=1)
    t = client.wait_for_tune(t.id, timeout=600)
    assert t.status == "finished", [r.error for r in t.trials]
    best = client.get_result(t.best_result_id)
    inp, out = f"lineage-in-{uuid.uuid4().hex[:6]}", f"lineage-out-{uuid.uuid4().hex[:6]}"
    inf = client.deploy_inference(best.id, inp, out)
    from kafkaml_ray.ingest import InferenceProducer

    producer = InferenceProducer(
        settings.bootstrap_servers, inp, "RAW", {"data_type": "float32", "data_reshape": "26"}
    )
    for sample in x[:20]:
        producer.send(sample)
    producer.flush()
    assert len(read_all(settings, out, 20)) == 20
    client.stop_inference(inf.id)

    # What the trial recorded when it ran.
    lin = best.lineage
    source = lin.datasource
    assert (source.id, source.messages, source.format) == (dep.datasource_id, 400, "RAW")
    assert source.topic.startswith(f"{topic}:") and source.test_rate == 0.1
    assert lin.split.sizes == {"train": 320, "val": 40, "test": 40}
    assert lin.code.sha256 == code_sha256(code) == best.code_sha256
    assert lin.code.code == code and lin.code.version == 1
    assert lin.params == {"batch_size": 32, **best.hyperparameters}
    assert (lin.tune.id, lin.tune.metric, lin.tune.mode) == (t.id, "val_loss", "min")
    assert lin.tune.space == space
    weights = artifacts.get(best.weights_uri)
    assert lin.weights.sha256 == hashlib.sha256(weights).hexdigest()
    assert {"python", "ray", "torch", "numpy"} <= set(lin.libraries)

    # The tree: datasource → search → result → inference, from when to when.
    tree = client.lineage(best.id)
    assert tree.datasource["id"] == dep.datasource_id and tree.deployment is None
    assert tree.tune["id"] == t.id and tree.result["params"] == lin.params
    assert tree.result["weights_sha256"] == lin.weights.sha256 and tree.result["best"]
    [served] = tree.inferences
    assert (served["id"], served["status"], served["input_topic"]) == (inf.id, "stopped", inp)
    assert served["from"] and served["to"] and served["from"] <= served["to"]
    run = _cli(settings)
    text = run("result", "lineage", str(best.id)).splitlines()
    assert text[0].startswith(f"datasource {dep.datasource_id}: {topic}:")
    assert text[1].startswith(f"    └─ tune search {t.id}: min val_loss [finished]")
    assert text[2].startswith(f"        └─ result {best.id}: mlp (pytorch), code version 1")
    assert any(line.strip().startswith(f"└─ inference {inf.id}: {inp} → {out}") for line in text)
    dot = run("result", "lineage", str(best.id), "--dot")
    assert f'"datasource-{dep.datasource_id}" -> "tune-{t.id}"' in dot
    assert f'"result-{best.id}" -> "inference-{inf.id}"' in dot

    # Found by what it came from and what it reached.
    trials = {r.hyperparameters["lr"]: r.id for r in t.trials}
    ids = lambda **f: [r.id for r in client.list_results(**f)]  # noqa: E731
    assert ids(datasource_id=dep.datasource_id) == sorted([trained.id, *trials.values()])
    assert ids(datasource_id=dep.datasource_id + 1) == []
    assert ids(topic=topic) == sorted([trained.id, *trials.values()])
    assert ids(params={"lr": 0.01}) == [trials[0.01]]
    assert ids(params={"batch_size": 16}) == [trained.id]
    assert ids(tune_id=t.id, metrics={"val_loss": (None, best.val_metrics["loss"])}) == [best.id]
    assert ids(code_version=1, framework="pytorch", status="finished") == sorted(
        [trained.id, *trials.values()]
    )
    client.tag_result(best.id, "candidate", "served")
    client.set_result_notes(best.id, "Served on the lineage topics")
    assert ids(tag="candidate") == [best.id] and ids(text="lineage topics") == [best.id]
    shown = run("result", "show", str(best.id))
    assert f"data: datasource {dep.datasource_id} ({source.topic}); params: " in shown
    assert "tags: candidate, served; notes: Served on the lineage topics" in shown
    listed = json.loads(run("result", "list", "--param", "lr=0.001", "--topic", topic, "--json"))
    assert [r["id"] for r in listed] == [trials[0.001]]
    bound = f"val_loss<={best.val_metrics['loss']}"
    listed = json.loads(run("result", "list", "--tune", str(t.id), "--metric", bound, "--json"))
    assert [r["id"] for r in listed] == [best.id]
    compared = run("result", "compare", str(trials[0.01]), str(trials[0.001]))
    assert any(line.startswith("* lr ") for line in compared.splitlines())
    assert any(line.startswith("  epochs ") for line in compared.splitlines())
    from kafkaml_ray.cli import cli

    env = {k: v for k, v in settings.env().items() if v is not None}
    wrong = CliRunner().invoke(cli, ["result", "list", "--metric", "accuracy is high"], env=env)
    assert wrong.exit_code == 1 and "expected NAME>=X" in wrong.output

    # The search exported to MLflow: a parent run, and each trial a child run with its
    # per-epoch and test metrics, its weights, code and lineage; read back with MLflow's client.
    from mlflow.tracking import MlflowClient

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    parent = run("tune", "export", str(t.id), "--mlflow", uri).split()[-1]
    ml = MlflowClient(tracking_uri=uri)
    children = ml.search_runs(
        [ml.get_run(parent).info.experiment_id],
        filter_string=f"tags.mlflow.parentRunId = '{parent}'",
    )
    assert sorted(int(c.data.tags["kafkaml.result_id"]) for c in children) == sorted(
        trials.values()
    )
    child = next(c for c in children if c.data.tags["kafkaml.result_id"] == str(best.id))
    run_id = child.info.run_id
    assert [m.step for m in ml.get_metric_history(run_id, "val_loss")] == [1]
    for name, value in best.test_metrics.items():
        assert child.data.metrics[f"test_{name}"] == pytest.approx(value)
    assert child.data.params["lr"] == str(best.hyperparameters["lr"])
    assert {a.path for a in ml.list_artifacts(run_id)} >= {"weights", "code", "lineage.json"}
    [saved] = ml.list_artifacts(run_id, "weights")
    got = Path(ml.download_artifacts(run_id, saved.path, str(tmp_path / "dl"))).read_bytes()
    assert got == weights

    # A trial reproduced: a deployment of the same code with the trial's hyper-parameters.
    with running_listener(settings):
        again = client.reproduce(best.id)
        again = client.wait_for_deployment(again.id, timeout=300)
    [copy] = again.results
    assert (copy.status, copy.reproduction_of, copy.params) == ("finished", best.id, lin.params)
    assert copy.test_metrics == pytest.approx(best.test_metrics, rel=0.05)
    assert client.lineage(best.id).reproductions == [copy.id]


@pytest.mark.integration
def test_a_reproduction_trains_the_same_code_and_reaches_the_same_accuracy(
    ray_cluster, broker, client, settings, topic
):
    from kafkaml_ray.demo import register_examples

    model_id = register_examples(client, ["digits-cnn-pytorch"])["digits-cnn-pytorch"]
    config = client.create_configuration("digits", [model_id])
    dep = client.deploy_training(config.id, kwargs="epochs=3")
    x, y = digits_data()
    with running_listener(settings):
        send_stream(settings, topic, dep.id, x, y)
        first = client.wait_for_deployment(dep.id, timeout=600).results[0]
        assert first.status == "finished", first.error
        # The model's code changes afterwards: the reproduction still trains version 1.
        code = client.get_model(model_id).code
        client.update_model(model_id, code=code + "\n# changed after the first result\n")
        assert client.get_model(model_id).code != code
        again = client.reproduce(first.id)
        assert [r.reproduction_of for r in again.results] == [first.id]
        again = client.wait_for_deployment(again.id, timeout=600).results[0]
    assert again.status == "finished", again.error
    assert (again.model_version, again.code_sha256) == (1, first.code_sha256)
    assert again.lineage.code.code == code and again.params == first.params
    assert again.lineage.datasource.topic == first.lineage.datasource.topic
    assert again.lineage.reproduction_of == first.id
    accuracy = first.test_metrics["accuracy"], again.test_metrics["accuracy"]
    print(f"test accuracy: first {accuracy[0]:.4f}, reproduction {accuracy[1]:.4f}")
    assert abs(accuracy[0] - accuracy[1]) <= 0.05, accuracy  # the same, within noise
    assert client.lineage(first.id).reproductions == [again.id]
    assert f"reproduces result {first.id}" in _cli(settings)("result", "lineage", str(again.id))
