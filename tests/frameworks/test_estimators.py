"""scikit-learn and XGBoost through the whole pipeline on the real broker and Ray: Kafka-ML's
RawSink bytes train them (XGBoost data parallel on two Ray Train workers), they are served
on Kafka, trained online from OnlineRawSink bytes and exported to MLflow; their weights are
a skops file and XGBoost's own model file, never pickle."""

from __future__ import annotations

import json
import uuid

import numpy as np
import pytest

from tests.conftest import running_listener, send_like_kafka_ml, send_like_kafka_ml_online
from tests.serve.test_inference import read_all
from tests.train.test_training import digits_data

pytestmark = pytest.mark.integration


#: (example model, the saved weights' name, the file's first bytes, a library recorded)
ESTIMATORS = {
    "sklearn": ("digits-sgd-sklearn", "model.skops", b"PK", "skops"),  # (skops: a zip of JSON)
    "xgboost": ("digits-trees-xgboost", "model.ubj", b"{", "xgboost-cpu"),  # (UBJSON)
}


@pytest.mark.parametrize("framework", ESTIMATORS)
def test_trains_from_a_raw_sink_serves_on_kafka_and_exports_to_mlflow(
    ray_cluster, broker, client, settings, topic, tmp_path, monkeypatch, framework
):
    from mlflow.tracking import MlflowClient

    from kafkaml_ray.demo import register_examples
    from kafkaml_ray.ingest import InferenceProducer
    from kafkaml_ray.tracking import export_result

    example, weights_name, magic, library = ESTIMATORS[framework]
    ids = register_examples(client, [example])
    m = client.get_model(example)
    assert (m.framework, m.input_shape, m.output_shape) == (framework, [8, 8], [10])
    config = client.create_configuration(example, list(ids.values()))
    # (XGBoost on two data-parallel workers: Ray Train's XGBoostTrainer)
    workers = 2 if framework == "xgboost" else 1
    dep = client.deploy_training(config.id, batch_size=32, kwargs=f"num_workers={workers}")
    x, y = digits_data()
    send_like_kafka_ml(settings, topic, dep.id, x, y)
    with running_listener(settings):
        dep = client.wait_for_deployment(dep.id, timeout=300)
    (r,) = dep.results
    assert r.status == "finished", r.error
    assert r.test_metrics["accuracy"] > 0.85, r.test_metrics
    assert set(r.test_metrics) == {"accuracy", "loss"}
    assert np.asarray(r.confusion_matrix).shape == (10, 10)
    lineage = client.get_result(r.id).lineage
    assert lineage.weights.uri.endswith(weights_name)
    assert {"scikit-learn", library} <= set(lineage.libraries)
    name, blob = client.download_weights(r.id)
    assert name == weights_name and blob.startswith(magic)

    # Served on Kafka: one prediction per input, the class probabilities `predict` gives.
    inp, out = f"in-{uuid.uuid4().hex[:6]}", f"out-{uuid.uuid4().hex[:6]}"
    inf = client.deploy_inference(r.id, inp, out)
    try:
        producer = InferenceProducer(
            settings.bootstrap_servers, inp, "RAW", {"data_type": "float32", "data_reshape": "8 8"}
        )
        for i, xi in enumerate(x[:50]):
            producer.send(xi, key=f"k{i}".encode())
        producer.flush()
        outputs = read_all(settings, out, 50)
        got = {m.key().decode(): json.loads(m.value())["values"] for m in outputs}
        assert len(got) == 50
        direct = np.asarray(client.predict(r.id, x[:50]))
        assert direct.shape == (50, 10)
        for i in range(50):
            np.testing.assert_allclose(got[f"k{i}"], direct[i], rtol=1e-5, atol=1e-6)
    finally:
        client.delete_inference(inf.id)

    monkeypatch.setenv("MLFLOW_DISABLE_TELEMETRY", "true")
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    run_id = export_result(client, r.id, uri, artifact_location=str(tmp_path / "mlruns"))
    ml = MlflowClient(uri)
    assert [a.path for a in ml.list_artifacts(run_id, "weights")] == [f"weights/{weights_name}"]
    assert ml.get_run(run_id).data.tags["kafkaml.framework"] == framework


@pytest.mark.parametrize("framework", ESTIMATORS)
def test_trains_online_window_by_window(ray_cluster, broker, client, settings, topic, framework):
    """OnlineRawSink bytes: the model learns window after window (scikit-learn's
    partial_fit, XGBoost's boosting continued) and publishes versions."""
    from kafkaml_ray.demo import register_examples

    example, weights_name, _, _ = ESTIMATORS[framework]
    ids = register_examples(client, [example])
    config = client.create_configuration(f"{example}-online", list(ids.values()))
    dep = client.deploy_training(
        config.id,
        batch_size=32,
        online={
            "window_messages": 300,
            "window_seconds": 5,
            "stream_timeout_s": 8,
            "validation_rate": 0.2,
            "monitoring_metric": "accuracy",
        },
    )
    x, y = digits_data()
    send_like_kafka_ml_online(settings, topic, dep.id, x[:1200], y[:1200])
    with running_listener(settings):
        dep = client.wait_for_deployment(dep.id, timeout=300)
    (r,) = dep.results
    assert r.status == "finished", r.error
    windows = client.list_windows(r.id)
    assert sum(w.messages for w in windows) == 1200
    assert len(windows) >= 4
    # It learns: the later windows are scored (before training on them) better than chance.
    assert windows[-1].prequential["accuracy"] > 0.8, [w.prequential for w in windows]
    versions = client.list_versions(r.id)
    assert versions and versions[0].weights_uri.endswith(weights_name.rsplit(".")[-1])


def test_a_model_skops_would_have_to_trust_is_refused_with_the_type_named(ray_cluster, settings):
    """A class of the model code's own in a scikit-learn model could only be loaded by
    trusting it (skops would have to import and build it): refused when it is registered."""
    from kafkaml_ray.errors import ModelCodeError
    from kafkaml_ray.model_code import validate_model

    code = (
        "from sklearn.linear_model import SGDClassifier\n"
        "class Scaler(StandardScaler):\n"
        "    pass\n"
        "model = make_pipeline(Scaler(), SGDClassifier())\n"
    )
    with pytest.raises(
        ModelCodeError, match="skops would have to trust.*kafkaml_user_model.Scaler"
    ):
        validate_model("sklearn", code, "", settings)
