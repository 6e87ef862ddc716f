"""Online training on the real broker and a local Ray: a control message in Kafka-ML's online
form starts a run per model that trains window after window, scores each window before
training on it, checkpoints, and publishes versions."""

from __future__ import annotations

import contextlib

import numpy as np
import pytest

from kafkaml_ray import artifacts
from kafkaml_ray.errors import Conflict
from tests.conftest import running_listener, send_like_kafka_ml_online, wait_until
from tests.train.test_training import digits_data, digits_models  # noqa: F401

pytestmark = pytest.mark.integration


@contextlib.contextmanager
def _stopped_after(client, deployment_id: int):
    """Stop the deployment's online runs and delete the inferences of its results at the
    end, also when the test fails: a run that never ends would hold its CPU for the rest
    of the session."""
    try:
        yield
    finally:
        with contextlib.suppress(Exception):
            client.stop_training(deployment_id)
        results = {r.id for r in client.get_deployment(deployment_id).results}
        for inf in client.list_inferences():
            if inf.result_id in results:
                with contextlib.suppress(Exception):
                    client.delete_inference(inf.id)


def _online_cnn(client, settings, topic, name: str, validation_rate: float = 0.0, **deploy):
    """The PyTorch digits CNN deployed for online training (``deploy``: `deploy_training`'s
    options), its result id, and an online sink for its stream on ``topic``."""
    from kafkaml_ray.demo import register_examples
    from kafkaml_ray.ingest import RawSink

    ids = register_examples(client, ["digits-cnn-pytorch"])
    config = client.create_configuration(name, list(ids.values()))
    dep = client.deploy_training(config.id, **deploy)
    sink = RawSink(
        settings.bootstrap_servers,
        topic,
        dep.id,
        online=True,
        validation_rate=validation_rate,
        control_topic=settings.control_topic,
    )
    return dep, dep.results[0].id, sink


def _send_plain(settings, topic, x, y) -> None:
    """More data on the topic, as Kafka-ML's OnlineRawSink writes it after its first send."""
    from kafka import KafkaProducer

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    for xi, yi in zip(x, y, strict=True):
        producer.send(topic, key=yi.tobytes(), value=xi.tobytes())
    producer.flush()
    producer.close()


def test_online_digits_in_both_frameworks(broker, client, settings, topic, digits_models):  # noqa: F811
    """Kafka-ML's OnlineRawSink bytes (a plain topic name, "incremental": true, one-element
    labels) start one online run per model. Data sent before the run was up and after it are
    all trained on, each message in exactly one window; the stream time-out ends the runs as
    finished; the first window publishes version 1 and the model learns as it goes."""
    x, y = digits_data()
    x, y = x[:1200], y[:1200]
    config = client.create_configuration("online", list(digits_models.values()))
    dep = client.deploy_training(
        config.id,
        kwargs={"pytorch": "epochs=3", "tensorflow": "epochs=3"},
        batch_size=32,
        online={
            "window_messages": 200,
            "window_seconds": 5,
            "stream_timeout_s": 10,
            "validation_rate": 0.2,
            "monitoring_metric": "accuracy",
            "change": "up",
            "improvement": 0.02,
        },
    )
    send_like_kafka_ml_online(settings, topic, dep.id, x[:600], y[:600])  # before the run
    with running_listener(settings), _stopped_after(client, dep.id):
        try:
            wait_until(
                lambda: all(r.status == "training" for r in client.get_deployment(dep.id).results),
                120,
                "both online runs to start",
            )
        except AssertionError:
            raise AssertionError(
                f"{client.list_datasources(check=False)} {client.get_deployment(dep.id)}"
            ) from None
        _send_plain(settings, topic, x[600:], y[600:])  # while it runs
        dep = client.wait_for_deployment(dep.id, timeout=600)
    ds = client.get_datasource(dep.datasource_id, check=False)
    assert (ds.topic, ds.message["incremental"], ds.message["total_msg"]) == (topic, True, None)
    for r in dep.results:
        assert r.status == "finished", (r.model_name, r.error)
        windows = client.list_windows(r.id)
        # Every message in exactly one window, in order, none skipped.
        spans = [w.offsets[f"{topic}:0"] for w in windows]
        assert spans[0][0] == 0 and spans[-1][1] == len(x), spans
        assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
        assert sum(w.messages for w in windows) == len(x)
        assert [w.window for w in windows] == list(range(1, len(windows) + 1))
        # Prequential: each window scored before training on it; the model learns.
        assert all("accuracy" in w.prequential for w in windows)
        first, last = windows[0].prequential["accuracy"], windows[-1].prequential["accuracy"]
        assert first < 0.5 < 0.8 <= last, (r.model_name, [w.prequential for w in windows])
        versions = client.list_versions(r.id)
        assert versions and versions[0].version == 1 and versions[0].window == 1
        assert [v.version for v in versions] == list(range(1, len(versions) + 1))
        # Each later version beat the one before by 0.02, both scored on the same window.
        assert versions[0].metrics["previous"] is None
        gains = [v.metrics["monitored"] - v.metrics["previous"] for v in versions[1:]]
        assert all(g >= 0.02 for g in gains), gains
        monitored = [round(v.metrics["monitored"], 3) for v in versions]
        assert r.weights_uri == versions[-1].weights_uri  # the newest version is served
        # The lineage: the online datasource, and each version with the offsets behind it.
        assert r.lineage.datasource.incremental and r.datasource_id == dep.datasource_id
        tree = client.lineage(r.id)
        assert [(v["version"], v["offsets"]) for v in tree.versions] == [
            (v.version, v.offsets) for v in versions
        ]
        assert len(artifacts.get(versions[-1].weights_uri)) > 10_000
        preds = np.asarray(client.predict(r.id, x[-100:])).argmax(axis=1)
        assert (preds == y[-100:]).mean() >= 0.8
        curve = " ".join(f"{w.prequential['accuracy']:.2f}" for w in windows)
        print(f"{r.model_name}: prequential accuracy by window {curve}; versions {monitored}")


def _spans(client, result_id: int, topic: str) -> list[list[int]]:
    return [w.offsets[f"{topic}:0"] for w in client.list_windows(result_id)]


def test_a_killed_online_run_resumes_at_its_offsets_and_stops_cleanly(
    ray_cluster, broker, client, settings, topic
):
    """The process of a running online run is killed (SIGKILL): Ray runs it again, and it
    resumes from its checkpoint, so the windows cover every offset exactly once, none
    skipped and none trained twice. A malformed message is skipped and counted
    (``on_malformed="skip"``). Then a stop ends the never-ending run (stream_timeout -1)
    and frees its CPU."""
    import os
    import signal

    import ray
    from confluent_kafka import Producer
    from ray.util.state import list_tasks

    free = ray.available_resources().get("CPU", 0)
    dep, rid, sink = _online_cnn(
        client,
        settings,
        topic,
        "online-kill",
        validation_rate=0.1,
        kwargs="epochs=2",
        on_malformed="skip",
        online={"window_messages": 100, "window_seconds": 2, "stream_timeout_s": -1},
    )
    x, y = digits_data()
    with running_listener(settings), _stopped_after(client, dep.id):
        sink.send_many(x[:300], y[:300])
        wait_until(lambda: len(_spans(client, rid, topic)) >= 2, 180, "two windows")
        running = list_tasks(
            address=ray_cluster,
            filters=[("name", "=", f"online-result-{rid}"), ("state", "=", "RUNNING")],
            detail=True,
        )
        assert running, "the online run's task is not running"
        os.kill(running[0].worker_pid, signal.SIGKILL)
        bad = Producer(settings.kafka_config())
        bad.produce(topic, b"not 64 floats", b"\x01", partition=0)  # one malformed message
        bad.flush(30)
        sink.send_many(x[300:600], y[300:600])
        sink.close()
        total = 601
        wait_until(
            lambda: (s := _spans(client, rid, topic)) and s[-1][1] == total, 300, "every offset"
        )
        assert client.get_result(rid).status == "training"  # (it would wait on for data)
        client.stop_training(dep.id)
    spans = _spans(client, rid, topic)
    assert spans[0][0] == 0 and spans[-1][1] == total
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    windows = client.list_windows(rid)
    assert sum(w.messages for w in windows) == total
    assert sum(w.malformed for w in windows) == 1
    r = client.get_result(rid)
    assert r.status == "stopped"
    assert client.list_versions(rid)[0].version == 1
    # `result show` gives an online result's curve: its windows and versions (it said
    # "learning curve: (none)").
    from click.testing import CliRunner

    from kafkaml_ray.cli import cli

    env = {k: v for k, v in settings.env().items() if v is not None}
    shown = CliRunner().invoke(cli, ["result", "show", str(rid)], env=env).output
    assert "learning curve:\n(none)" not in shown, shown
    assert "prequential" in shown and "versions:" in shown and "trained through" in shown
    assert len([line for line in shown.splitlines() if f"{topic}:0[" in line]) == len(windows)
    wait_until(
        lambda: ray.available_resources().get("CPU", 0) >= free,
        120,
        f"CPUs freed ({free} free before the run)",
    )
    # A stopped online result trains on from its checkpoint: `train resume`.
    with running_listener(settings), _stopped_after(client, dep.id):
        # (waiting, or already training: a runner on a warm process claims it at once)
        assert client.resume_training(rid).status in ("waiting", "training")
        producer = Producer(settings.kafka_config())
        for xi, yi in zip(x[600:700], y[600:700], strict=True):
            producer.produce(topic, xi.tobytes(), yi.tobytes(), partition=0)
        producer.flush(30)
        wait_until(
            lambda: (s := _spans(client, rid, topic)) and s[-1][1] == total + 100,
            300,
            "the resumed run's windows",
        )
        assert client.get_result(rid).status == "training"
        with pytest.raises(Conflict, match=f"result {rid} is training: only a failed or"):
            client.resume_training(rid)
    spans = _spans(client, rid, topic)
    assert all(a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)), spans
    assert sum(w.messages for w in client.list_windows(rid)) == total + 100  # none twice
    print(f"killed after window 2; {len(windows)} windows cover offsets 0..{total} once")


def test_a_followed_inference_swaps_to_each_new_version_without_losing_an_input(
    ray_cluster, broker, client, settings, topic
):
    """An inference deployed with follow on a running online result: while the run publishes
    new versions, inputs keep coming; every input offset gets a prediction (at least once;
    duplicates counted), each output names its version in a header, and the versions seen
    per partition never go down. A plain deploy of the same result pins its version."""
    import time

    from tests.serve.test_inference import new_topics, provenance, read_all, send_inputs

    dep, rid, sink = _online_cnn(
        client,
        settings,
        topic,
        "online-follow",
        validation_rate=0.2,
        kwargs="epochs=1",
        online={
            "window_messages": 100,
            "window_seconds": 1,
            "stream_timeout_s": -1,
            "monitoring_metric": "accuracy",
            "change": "up",
            "improvement": 0.0,
        },
    )
    x, y = digits_data()
    inp, out = new_topics()
    with running_listener(settings), _stopped_after(client, dep.id):
        sink.send_many(x[:100], y[:100])
        wait_until(lambda: client.list_versions(rid), 180, "version 1")
        followed = client.deploy_inference(rid, inp, out, follow=True, batch_size=32)
        pinned = client.deploy_inference(rid, inp + "-p", out + "-p")
        assert (followed.follow, followed.version) == (True, None)
        assert (pinned.follow, pinned.version) == (False, 1)
        sent = 0
        for i in range(1, 12):  # inputs and training data, a little at a time
            send_inputs(settings, inp, x[i * 50 : (i + 1) * 50])
            send_inputs(settings, inp + "-p", x[i * 50 : (i + 1) * 50])
            sent += 50
            sink.send_many(x[i * 100 : (i + 1) * 100], y[i * 100 : (i + 1) * 100])
            time.sleep(1)
        sink.close()
        got = read_all(settings, out, sent, timeout=180, distinct=True)
        got_pinned = read_all(settings, out + "-p", sent, timeout=180)
        client.stop_training(dep.id)
    published = [v.version for v in client.list_versions(rid)]
    assert len(published) >= 2, published
    offsets = {provenance(m) for m in got}
    assert len(offsets) == sent, f"{sent - len(offsets)} inputs without a prediction"
    seen: dict[bytes, list[int]] = {}
    for m in got:  # (a partition's outputs come in order)
        h = dict(m.headers())
        seen.setdefault(h["kafkaml-input-partition"], []).append(int(h["kafkaml-model-version"]))
    for partition, versions in seen.items():
        assert versions == sorted(versions), f"partition {partition}: {versions}"
    used = sorted({v for vs in seen.values() for v in vs})
    assert len(used) >= 2, f"the inference served only versions {used} of {published}"
    assert {dict(m.headers())["kafkaml-model-version"] for m in got_pinned} == {b"1"}
    print(
        f"follow: {sent} inputs, {len(got) - sent} duplicates, versions published {published}, "
        f"served {used}"
    )


def test_a_malformed_message_fails_an_online_run_with_on_malformed_fail(
    broker, client, settings, topic
):
    """``on_malformed="fail"``: the window with a malformed message fails the run, naming the
    message's topic, partition and offset; no window of it is recorded (nothing trained on a
    part of it)."""
    from confluent_kafka import Producer

    dep, rid, sink = _online_cnn(
        client,
        settings,
        topic,
        "online-fail",
        kwargs="epochs=1",
        on_malformed="fail",
        online={"window_messages": 100, "window_seconds": 2, "stream_timeout_s": 30},
    )
    x, y = digits_data()
    with running_listener(settings), _stopped_after(client, dep.id):
        with sink:
            sink.send_many(x[:50], y[:50])
        bad = Producer(settings.kafka_config())
        bad.produce(topic, b"not 64 floats", b"\x01", partition=0)
        bad.flush(30)
        wait_until(
            lambda: client.get_result(rid).status in ("finished", "failed", "stopped"),
            180,
            "the end",
        )
    r = client.get_result(rid)
    assert r.status == "failed", (r.status, r.error)
    assert f"malformed message at {topic}:0 offset 50" in r.error
    assert client.list_windows(rid) == []


def test_an_online_deployment_checks_its_monitoring_metric(client, digits_models):  # noqa: F811
    """A metric the model does not report published nothing, silently; Kafka-ML's val_
    names (and our Tune's) are the windows' own, and the direction follows the metric."""
    from kafkaml_ray.errors import InvalidInput

    config = client.create_configuration("watched", [digits_models["digits-cnn-pytorch"]])
    reports = "model 'digits-cnn-pytorch' reports accuracy, loss"
    with pytest.raises(InvalidInput, match=f"monitoring_metric 'precision': {reports}"):
        client.deploy_training(config.id, online={"monitoring_metric": "precision"})
    dep = client.deploy_training(config.id, online={"monitoring_metric": "val_accuracy"})
    assert (dep.online["monitoring_metric"], dep.online["change"]) == ("accuracy", "up")
    dep = client.deploy_training(config.id, online={"monitoring_metric": "val_loss"})
    assert (dep.online["monitoring_metric"], dep.online["change"]) == ("loss", "down")
