"""Training on the real broker and a local Ray: a configuration of a PyTorch and a Keras
model trained in parallel on one stream, learning curves, confusion matrices, reloaded
weights, regression, stream reuse, bad kwargs, shape mismatches, stop, and Ray jobs."""

import time

import numpy as np
import pytest
from click.testing import CliRunner

from kafkaml_ray.cli import cli
from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.ingest import RawSink
from kafkaml_ray.schemas import PHASES
from tests.conftest import (
    cpus_free,
    running_listener,
    running_task,
    send_like_kafka_ml,
    wait_until,
)

pytestmark = pytest.mark.integration
EPOCHS = 10


def digits_data():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32).reshape(-1, 8, 8), y.astype(np.int64)


def regression_data(n=1000, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 26)).astype(np.float32)
    w = rng.normal(size=26).astype(np.float32)
    return x, (x @ w + 0.1 * rng.normal(size=n)).astype(np.float32)


def send_stream(settings, topic, dep_id, x, y, **kw):
    with RawSink(
        settings.bootstrap_servers,
        topic,
        dep_id,
        validation_rate=0.1,
        test_rate=0.1,
        control_topic=settings.control_topic,
        **kw,
    ) as sink:
        sink.send_many(x, y)
    return sink.announced


@pytest.fixture
def digits_models(ray_cluster, client, example):
    from kafkaml_ray.demo import register_examples

    return register_examples(client, ["digits-cnn-pytorch", "digits-cnn-keras"])


def test_digits_in_both_frameworks_side_by_side(broker, client, settings, topic, digits_models):
    """Fed by Kafka-ML's own RawSink bytes: its "label_reshape": "1" labels are scalars."""
    config = client.create_configuration("digits", list(digits_models.values()))
    dep = client.deploy_training(config.id, batch_size=32, kwargs=f"epochs={EPOCHS}")
    assert [r.status for r in dep.results] == ["waiting", "waiting"]
    x, y = digits_data()
    with running_listener(settings):
        send_like_kafka_ml(settings, topic, dep.id, x, y)
        dep = client.wait_for_deployment(dep.id, timeout=900)
    n_test = int(0.1 * len(x))
    env = {k: v for k, v in settings.env().items() if v is not None}
    for r in dep.results:
        assert r.status == "finished", r.error
        assert r.test_metrics["accuracy"] >= 0.9, (r.model_name, r.test_metrics)
        assert [h["epoch"] for h in r.history] == list(range(1, EPOCHS + 1))
        assert all(h["train"] and h["val"] for h in r.history)
        assert {"accuracy", "loss"} <= set(r.history[-1]["val"])
        m = np.asarray(r.confusion_matrix)
        assert m.shape == (10, 10) and m.sum() == n_test
        assert r.training_time_s > 0 and r.confusion_matrix_uri.endswith(".png")
        # Where the time went, from the control message to the finished result, in order.
        assert list(r.phases) == [p for p in PHASES.values() if p], r.phases
        assert all(s >= 0 for s in r.phases.values()) and r.phases["epochs"] > 0
        shown = CliRunner().invoke(cli, ["result", "show", str(r.id)], env=env)
        assert "time by phase (s, " in shown.output and "Ray Train start " in shown.output
        # Reloaded weights predict exactly what the trained model predicted.
        x_test, y_test = x[-n_test:], y[-n_test:]
        preds = np.asarray(client.predict(r.id, x_test)).argmax(axis=1)
        reloaded = np.bincount(y_test * 10 + preds, minlength=100).reshape(10, 10)
        np.testing.assert_array_equal(reloaded, m)
        name, blob = client.download_weights(r.id)
        assert name == ("model.safetensors" if r.framework == "pytorch" else "model.keras")
        assert len(blob) > 10_000
    ds = client.get_datasource(dep.datasource_id)
    assert (ds.status, ds.total_msg, ds.malformed_count) == ("accepted", len(x), 0)
    assert ds.input_config["label_reshape"] == "1"  # as sent


FAILS_AFTER_TRAINING = """
import torch
from ignite.metrics import Accuracy, Loss
from torch import nn


class TrainsButCannotPredict(nn.Module):
    input_shape = (64,)

    def __init__(self):
        super().__init__()
        self.net = nn.Linear(64, 10)

    def forward(self, x):
        if not self.training:  # test metrics and the confusion matrix run in eval mode
            raise RuntimeError("no predictions in eval mode")
        return self.net(x.reshape(len(x), -1) / 16.0)

    def loss_fn(self):
        return nn.CrossEntropyLoss()

    def optimizer(self):
        return torch.optim.Adam(self.parameters(), lr=1e-2)

    def metrics(self):
        return {"accuracy": Accuracy(), "loss": Loss(self.loss_fn())}
"""


def test_a_failure_after_training_keeps_the_weights(ray_cluster, broker, client, settings, topic):
    """Nothing after training may lose the model: the weights are stored first; a test
    evaluation and a confusion matrix that cannot be made are named on the result."""
    from safetensors.numpy import load

    from tests.conftest import add_model_unvalidated

    model = add_model_unvalidated(client, "cannot-predict", "pytorch", FAILS_AFTER_TRAINING)
    config = client.create_configuration("after", [model])
    dep = client.deploy_training(config.id, kwargs="epochs=2")
    x, y = digits_data()
    with running_listener(settings):
        with RawSink(
            settings.bootstrap_servers,
            topic,
            dep.id,
            validation_rate=0.0,  # (validation runs in eval mode too)
            test_rate=0.2,
            control_topic=settings.control_topic,
        ) as sink:
            sink.send_many(x[:300], y[:300])
        dep = client.wait_for_deployment(dep.id, timeout=600)
    r = dep.results[0]
    assert r.status == "finished" and r.weights_uri, r.error
    assert r.error.startswith("trained and saved, then the test metrics failed: ")
    assert "the confusion matrix failed: RuntimeError: no predictions in eval mode" in r.error
    assert [h["epoch"] for h in r.history] == [1, 2] and r.train_metrics
    name, blob = client.download_weights(r.id)
    assert name == "model.safetensors"
    assert set(load(blob)) == {"net.weight", "net.bias"}


def test_regression_reports_mae_and_mse_and_the_stream_is_reused(
    ray_cluster, broker, client, settings, topic, example
):
    from confluent_kafka import Consumer, TopicPartition

    from kafkaml_ray.demo import register_examples

    ids = register_examples(client, ["regression-mlp-pytorch", "regression-mlp-keras"])
    config = client.create_configuration("regression", list(ids.values()))
    first = client.deploy_training(config.id, batch_size=32, kwargs="epochs=15")
    second = client.deploy_training(config.id, batch_size=64, kwargs="epochs=3")
    x, y = regression_data()
    with running_listener(settings):
        send_stream(settings, topic, first.id, x, y)
        first = client.wait_for_deployment(first.id, timeout=900)
        end = Consumer({"bootstrap.servers": settings.bootstrap_servers, "group.id": "x"})
        before = end.get_watermark_offsets(TopicPartition(topic, 0))[1]
        client.resend_datasource(first.datasource_id, second.id)
        second = client.wait_for_deployment(second.id, timeout=900)
        assert end.get_watermark_offsets(TopicPartition(topic, 0))[1] == before  # no new data
        end.close()
    torch_r, keras_r = first.results
    assert torch_r.status == keras_r.status == "finished", (torch_r.error, keras_r.error)
    assert {"mae", "mse"} <= set(torch_r.test_metrics) and {"mae", "mse"} <= set(
        keras_r.test_metrics
    )
    assert torch_r.test_metrics["mae"] < 0.5 * np.abs(y).mean()  # learned something
    assert torch_r.confusion_matrix is None  # not a classifier
    assert [r.status for r in second.results] == ["finished", "finished"]
    assert second.datasource_id != first.datasource_id
    assert (
        client.get_datasource(second.datasource_id).topic
        == client.get_datasource(first.datasource_id).topic
    )
    assert len(second.results[0].history) == 3


def test_bad_kwargs_are_refused_at_deploy(ray_cluster, client, digits_models):
    config = client.create_configuration("c", list(digits_models.values()))
    for bad, error in [
        ("epochs=five", "not a literal value"),
        ("epochs=0", "epochs=0 is not valid"),
        ("epochz=3", "unknown training argument 'epochz'"),
        ("epochs=__import__('os').getcwd()", "not a literal value"),
        ("epochs=3,,", "not of the form"),
    ]:
        with pytest.raises(InvalidInput, match=error):
            client.deploy_training(config.id, kwargs=bad)
    assert client.list_deployments() == []


def test_a_shape_mismatch_fails_that_model_and_the_other_goes_on(
    broker, client, settings, topic, digits_models
):
    from kafkaml_ray.demo import register_examples

    mlp = register_examples(client, ["regression-mlp-keras"])["regression-mlp-keras"]
    config = client.create_configuration("mixed", [digits_models["digits-cnn-pytorch"], mlp])
    dep = client.deploy_training(config.id, kwargs="epochs=2")
    x, y = digits_data()
    with running_listener(settings):
        send_stream(settings, topic, dep.id, x[:500], y[:500])
        dep = client.wait_for_deployment(dep.id, timeout=900)
    cnn, bad = dep.results
    assert cnn.status == "finished", cnn.error
    assert bad.status == "failed"
    assert (
        "takes inputs of shape [26], but the data stream has samples of shape [8, 8]" in bad.error
    )


@pytest.mark.parametrize("workers", [1, 2])
def test_stop_in_mid_run_frees_ray_resources(
    broker, client, settings, topic, digits_models, workers
):
    """One worker trains in the run's own Ray task (Ray Train's local mode); two are Ray
    Train's worker group in a placement group, with a torch process group. Either way the
    run holds its CPUs while it trains, and a stop gives them back."""
    import ray

    def placement_groups():
        return {k for k, g in ray.util.placement_group_table().items() if g["state"] != "REMOVED"}

    config = client.create_configuration("slow", [digits_models["digits-cnn-pytorch"]])
    dep = client.deploy_training(
        config.id, batch_size=4, kwargs=f"epochs=500, num_workers={workers}"
    )
    # What this run takes must come back (the session's trained model may be served).
    free, groups = cpus_free(workers), placement_groups()
    x, y = digits_data()
    with running_listener(settings):
        send_stream(settings, topic, dep.id, x, y)
        wait_until(lambda: client.get_deployment(dep.id).results[0].history, 300, "an epoch")
        task = running_task(f"train-result-{client.get_deployment(dep.id).results[0].id}")
        assert task[0].required_resources.get("CPU", 0) == (workers == 1)
        assert bool(placement_groups() - groups) == (workers > 1)  # the workers' group
        dep = client.stop_training(dep.id)
    r = dep.results[0]
    assert (r.status, r.error) == ("stopped", "stopped by the user")
    # Ray Train's abort removes a worker group's placement group (a killed run would leave
    # it reserved until the test session's Ray job ends); its processes then go too.
    wait_until(lambda: not placement_groups() - groups, 60, "the run's placement group removed")
    wait_until(
        lambda: ray.available_resources().get("CPU", 0) >= free,
        120,
        f"CPUs freed ({free} free before the run)",
    )
    assert client.get_result(r.id).status == "stopped"  # the stopped run wrote nothing after


def test_submit_as_a_ray_job(broker, client, settings, topic, digits_models):
    from kafkaml_ray.train.submit import job_client

    config = client.create_configuration("job", [digits_models["digits-cnn-pytorch"]])
    dep = client.deploy_training(config.id, kwargs="epochs=2", submit=True)
    assert dep.job_id and dep.job_id.startswith(f"kafkaml-training-{dep.id}-")
    x, y = digits_data()
    with running_listener(settings):
        send_stream(settings, topic, dep.id, x[:400], y[:400])
        dep = client.wait_for_deployment(dep.id, timeout=900)
    assert dep.results[0].status == "finished", dep.results[0].error
    status = wait_until(
        lambda: (
            (s := job_client(settings).get_job_status(dep.job_id)) in ("SUCCEEDED", "FAILED") and s
        ),
        120,
        "the job to end",
    )
    assert status == "SUCCEEDED"


def test_stopping_a_submitted_job_stops_its_training(
    broker, client, settings, topic, digits_models
):
    """A ``--submit`` deployment's training task belongs to the training pool, not to the
    job's driver: stopping the job alone left it training. The stop cancels it wherever it
    runs, its CPU comes back, and its result gets no write after the stop."""
    import ray

    config = client.create_configuration("slow-job", [digits_models["digits-cnn-pytorch"]])
    dep = client.deploy_training(config.id, batch_size=4, kwargs="epochs=500", submit=True)
    free = cpus_free(1)
    x, y = digits_data()
    with running_listener(settings):
        send_stream(settings, topic, dep.id, x, y)
        wait_until(lambda: client.get_deployment(dep.id).results[0].history, 300, "an epoch")
    dep = client.stop_training(dep.id)
    r = dep.results[0]
    assert (r.status, r.error) == ("stopped", "stopped by the user")
    wait_until(
        lambda: ray.available_resources().get("CPU", 0) >= free,
        30,
        f"the training's CPU freed ({free} free before the run)",
    )
    time.sleep(3)  # (a run still training would report its progress meanwhile)
    after = client.get_result(r.id)
    assert (after.status, after.history, after.progress) == ("stopped", r.history, r.progress)
    assert after.weights_uri is None


_FLOAT64_AT_IMPORT = """
torch.set_default_dtype(torch.float64)  # (changes the process it runs in, for good)

class Wide(nn.Module):
    def __init__(self):
        super().__init__()
        self.fc = nn.Linear(26, 1)
    def forward(self, x):
        return self.fc(x.to(torch.get_default_dtype())).float()
    def loss_fn(self):
        return nn.MSELoss()
    def optimizer(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)
    def metrics(self):
        return {"loss": Loss(self.loss_fn())}
"""

_CHECKS_ITS_PROCESS = """
class Plain(nn.Module):
    def __init__(self):
        super().__init__()
        if torch.get_default_dtype() != torch.float32:
            raise RuntimeError(f"inherited {torch.get_default_dtype()} from an earlier model")
        self.fc = nn.Linear(26, 1)
    def forward(self, x):
        return self.fc(x)
    def loss_fn(self):
        return nn.MSELoss()
    def optimizer(self):
        return torch.optim.SGD(self.parameters(), lr=0.01)
    def metrics(self):
        return {"loss": Loss(self.loss_fn())}
"""


def test_a_model_that_changes_its_process_does_not_change_the_next_models_run(
    ray_cluster, broker, client, settings, topic
):
    """Warm training processes are reused only for the same model code: model A sets
    float64 as PyTorch's default when its code runs, and model B, trained after it on the
    same stream, still gets float32 (it fails on purpose when it does not)."""
    a = client.add_model("float64-at-import", "pytorch", _FLOAT64_AT_IMPORT)
    b = client.add_model("checks-its-process", "pytorch", _CHECKS_ITS_PROCESS)
    first = client.deploy_training(client.create_configuration("a", [a.id]).id, kwargs="epochs=1")
    second = client.deploy_training(client.create_configuration("b", [b.id]).id, kwargs="epochs=1")
    x, y = regression_data(200)
    with running_listener(settings):
        send_stream(settings, topic, first.id, x, y)
        first = client.wait_for_deployment(first.id, timeout=600)
        assert first.results[0].status == "finished", first.results[0].error
        client.resend_datasource(first.datasource_id, second.id)
        second = client.wait_for_deployment(second.id, timeout=600)
    assert second.results[0].status == "finished", second.results[0].error


_KERAS_CUSTOM_LAYER = """
class Halve(layers.Layer):
    def call(self, x):
        return x * 0.5

model = keras.Sequential([keras.Input(shape=(26,)), layers.Dense(8), Halve(), layers.Dense(1)])
model.compile(optimizer="adam", loss="mse", metrics=["mae"])
"""


def test_a_keras_model_with_a_custom_layer_is_served(ray_cluster, broker, client, settings, topic):
    """It trained, then could not be loaded: Keras loads a saved model's custom layers
    from the classes its code defines, which the loader now gives it."""
    m = client.add_model("custom-layer", "tensorflow", _KERAS_CUSTOM_LAYER)
    dep = client.deploy_training(client.create_configuration("k", [m.id]).id, kwargs="epochs=1")
    x, y = regression_data(200)
    with running_listener(settings):
        send_stream(settings, topic, dep.id, x, y)
        r = client.wait_for_deployment(dep.id, timeout=600).results[0]
    assert r.status == "finished", r.error
    assert np.asarray(client.predict(r.id, x[:5])).shape == (5, 1)
