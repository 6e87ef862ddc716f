"""Inference on the real broker, a local Ray and Ray Serve: predictions equal the model's,
keys and headers kept, dead letters for bad input, at least once across a killed replica,
stop/restart, lag-driven autoscaling, HTTP and the tap."""

import json
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import Consumer

from kafkaml_ray.ingest import InferenceProducer
from tests.conftest import wait_until

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def trained(trained_digits):
    """The session's trained digits CNN (client, result, test images); the inferences a
    module deployed on it are deleted after the module."""
    yield trained_digits
    client = trained_digits[0]
    for inf in client.list_inferences():
        client.delete_inference(inf.id)


def new_topics():
    tag = uuid.uuid4().hex[:6]
    return f"in-{tag}", f"out-{tag}"


def provenance(m) -> tuple[bytes, bytes]:
    h = dict(m.headers())
    return h["kafkaml-input-partition"], h["kafkaml-input-offset"]


def read_all(settings, topic, n, timeout=120, distinct=False):
    """Messages of ``topic`` until ``n`` (distinct input offsets when ``distinct``) or timeout."""
    c = Consumer(
        settings.kafka_config(
            **{
                "group.id": uuid.uuid4().hex,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
    )
    c.subscribe([topic])
    out, seen, deadline = [], set(), time.monotonic() + timeout
    while (len(seen) if distinct else len(out)) < n and time.monotonic() < deadline:
        for m in c.consume(num_messages=1000, timeout=0.5):
            if m.error() is None:
                out.append(m)
                if distinct:
                    seen.add(provenance(m))
    c.close()
    return out


def send_inputs(settings, topic, data, partitions=None, bad=()):
    p = InferenceProducer(
        settings.bootstrap_servers, topic, "RAW", {"data_type": "float32", "data_reshape": "8 8"}
    )
    for i, x in enumerate(data):
        part = None if partitions is None else i % partitions
        p.send(x, key=f"k{i}".encode(), headers=[("trace", f"t{i}".encode())], partition=part)
    for j, raw in enumerate(bad):
        p.send_raw(raw, key=f"bad{j}".encode(), partition=None if partitions is None else 0)
    p.flush()


def test_every_input_gets_its_prediction_keys_and_headers_kept(trained):
    client, result, x = trained
    settings = client.settings
    inp, out = new_topics()
    inf = client.deploy_inference(result.id, inp, out, replicas=2, batch_size=128)
    assert inf.status == "running" and inf.input_format == "RAW"
    assert inf.input_config == {"data_type": "float32", "data_reshape": "8 8"}  # from its stream
    data = np.concatenate([x] * 3)[:5000]
    bad = [b"garbage", b"\0" * 7] * 50  # 100 malformed inputs among them
    send_inputs(settings, inp, data, partitions=2, bad=bad)
    got = read_all(settings, out, 5000)
    dlq = read_all(settings, out + ".dlq", 100)
    assert len(got) == 5000 and len(dlq) == 100
    direct = np.asarray(client.predict(result.id, data))
    by_key = {m.key().decode(): m for m in got}
    assert len(by_key) == 5000
    for i in range(0, 5000, 7):
        m = by_key[f"k{i}"]
        np.testing.assert_allclose(json.loads(m.value())["values"], direct[i], rtol=1e-4, atol=1e-5)
        headers = dict(m.headers())
        assert headers["trace"] == f"t{i}".encode()
        assert headers["kafkaml-result-id"] == str(result.id).encode()
        assert {"kafkaml-input-partition", "kafkaml-input-offset"} <= set(headers)
    for m in dlq:
        headers = dict(m.headers())
        assert m.value() in (b"garbage", b"\0" * 7) and m.key().startswith(b"bad")
        assert b"RAW data: message" in headers["error"]
    info = wait_until(
        lambda: (i := client.get_inference(inf.id)).predicted >= 5000 and i, 30, "replica stats"
    )
    assert (info.dead_letters, info.live_replicas) == (100, 2)
    # The tap reads the latest predictions without joining the consumer group.
    tapped = client.tap(inf.id, n=10)
    assert len(tapped) == 10 and all(len(t.values) == 10 for t in tapped)
    assert [t.error for t in client.tap(inf.id, n=3, dead_letters=True)][0].startswith("RAW")
    client.delete_inference(inf.id)


def test_the_predictor_path_of_gpu_inferences(trained):
    """What a GPU inference runs (the ingress sends its chunks to the Predictor deployment,
    several in flight), here on CPU: every input predicted, outputs in input order."""
    import dataclasses

    from ray import serve

    from kafkaml_ray.serve.app import app_for
    from kafkaml_ray.serve.spec import spec_from_store

    client, result, x = trained
    settings = client.settings
    inp, out = new_topics()
    inf = client.deploy_inference(result.id, inp, out, replicas=1)  # creates the topics
    spec = spec_from_store(settings, inf.id)
    client.stop_inference(inf.id)
    assert spec.predict_in_ingress  # a CPU inference predicts in its ingress replicas
    spec = dataclasses.replace(spec, predict_in_ingress=False, batch_size=64)
    serve.run(app_for(spec), name="predictor-path", route_prefix="/predictor-path")
    try:
        send_inputs(settings, inp, x[:1000])
        got = read_all(settings, out, 1000)
    finally:
        serve.delete("predictor-path")
    assert [int(provenance(m)[1]) for m in got] == list(range(1000))
    direct = np.asarray(client.predict(result.id, x[:1000]))
    values = np.asarray([json.loads(m.value())["values"] for m in got])
    np.testing.assert_allclose(values, direct, rtol=1e-4, atol=1e-5)


def test_http_requests_use_the_same_predictor(trained):
    import requests

    client, result, x = trained
    inp, out = new_topics()
    inf = client.deploy_inference(result.id, inp, out)
    url = f"http://127.0.0.1:{client.settings.serve_port}{inf.route}"
    r = requests.post(url, json={"data": x[:4].tolist()}, timeout=60)
    assert r.status_code == 200, r.text
    np.testing.assert_allclose(
        r.json()["values"], client.predict(result.id, x[:4]), rtol=1e-4, atol=1e-5
    )
    bad = requests.post(url, json={"data": "nope"}, timeout=60)
    assert bad.status_code == 400 and "bad request" in bad.json()["error"]
    nested = requests.post(url, data=b'{"data": ' + b"[" * 100_000 + b"}", timeout=60)
    assert nested.status_code == 400
    huge = requests.post(url, data=b"[" + b"0," * (17 * 2**20) + b"0]", timeout=120)
    assert huge.status_code == 413 and "over" in huge.json()["error"]
    client.delete_inference(inf.id)


def test_a_killed_ingress_replica_loses_nothing(trained):
    import ray

    client, result, x = trained
    settings = client.settings
    inp, out = new_topics()
    inf = client.deploy_inference(result.id, inp, out, replicas=2, batch_size=32)
    data = np.concatenate([x] * 3)[:4000]
    send_inputs(settings, inp, data, partitions=2)
    time.sleep(1.0)  # mid-stream
    victims = [
        a
        for a in ray.util.list_named_actors(all_namespaces=True)
        if "KafkaIngress" in a["name"] and f"inference-{inf.id}" in a["name"]
    ]
    assert victims
    ray.kill(ray.get_actor(victims[0]["name"], namespace=victims[0]["namespace"]), no_restart=True)
    read_all(settings, out, 4000, timeout=240, distinct=True)
    got = read_all(settings, out, 10**9, timeout=10)  # again, late duplicates included
    seen: dict[tuple[bytes, bytes], int] = {}
    for m in got:
        seen[provenance(m)] = seen.get(provenance(m), 0) + 1
    assert len(seen) == 4000  # every input offset has a prediction
    duplicates = sum(n - 1 for n in seen.values())
    print(f"duplicates after killing a replica: {duplicates}")  # counted, reported
    assert len(got) == 4000 + duplicates
    client.delete_inference(inf.id)


def test_stop_then_restart_resumes_where_it_stopped(trained):
    client, result, x = trained
    settings = client.settings
    inp, out = new_topics()
    inf = client.deploy_inference(result.id, inp, out)
    send_inputs(settings, inp, x[:300])
    assert len(read_all(settings, out, 300)) == 300
    assert client.stop_inference(inf.id).status == "stopped"
    send_inputs(settings, inp, x[300:500])  # arrives while stopped
    time.sleep(2)
    assert len(read_all(settings, out, 301, timeout=5)) == 300
    assert client.restart_inference(inf.id).status == "running"
    got = read_all(settings, out, 500)
    offsets = sorted(int(dict(m.headers())["kafkaml-input-offset"]) for m in got)
    assert offsets == list(range(500))  # resumed at 300, nothing twice, nothing lost
    client.delete_inference(inf.id)


def _slow_copy(client, result, seconds_per_batch: float):
    """The trained result served by a copy of its model code whose forward pass sleeps: a
    replica then takes a known time per batch, so a backlog lasts long enough to scale on,
    whatever the machine. (The same weights; a result row as training writes it.)"""
    from kafkaml_ray.store import ResultStatus, TrainingResult
    from tests.conftest import EXAMPLES

    code = (EXAMPLES / "digits_cnn_pytorch.py").read_text()
    slow = code.replace(
        "    def forward(self, x):\n",
        f"    def forward(self, x):\n        __import__('time').sleep({seconds_per_batch})\n",
    )
    assert slow != code
    model = client.add_model(f"slow-{uuid.uuid4().hex[:6]}", "pytorch", slow)
    with client.store.session() as s:
        row = TrainingResult(
            model_id=model.id,
            status=ResultStatus.FINISHED,
            weights_uri=result.weights_uri,
            test_metrics=result.test_metrics,
        )
        s.add(row)
        s.flush()
        return row.id


def test_lag_driven_autoscaling_up_under_backlog_and_down_when_idle(trained):
    client, result, x = trained
    settings = client.settings
    inp, out = new_topics()
    fast = {
        "metrics_interval_s": 0.5,
        "look_back_period_s": 2.0,
        "upscale_delay_s": 1.0,
        "downscale_delay_s": 5.0,
        "policy": {
            "policy_function": "kafkaml_ray.serve.autoscale:LagPolicy",
            "policy_kwargs": {"target_lag": 200},
        },
    }
    # 8 inputs per 20 ms at most: one replica needs over 10 s for the 4,000 below, a lag
    # 20 times the target; with three (one per partition) it drains in a third of that.
    slow = _slow_copy(client, result, 0.02)
    inf = client.deploy_inference(
        slow,
        inp,
        out,
        input_format="RAW",
        input_config={"data_type": "float32", "data_reshape": "8 8"},
        min_replicas=1,
        max_replicas=3,
        batch_size=8,
        autoscaling=fast,
    )
    from kafkaml_ray.serve.deploy import running_replicas

    assert running_replicas(settings, inf.id)["KafkaIngress"] == 1
    backlog = np.concatenate([x] * 3)[:4000]
    send_inputs(settings, inp, backlog, partitions=3)
    wait_until(
        lambda: running_replicas(settings, inf.id).get("KafkaIngress", 0) >= 2, 120, "a scale-up"
    )
    outputs = read_all(settings, out, len(backlog), timeout=300, distinct=True)
    assert len({provenance(m) for m in outputs}) == len(backlog)  # every input answered
    wait_until(
        lambda: running_replicas(settings, inf.id).get("KafkaIngress") == 1,
        180,
        "a scale-down when idle",
    )
    client.delete_inference(inf.id)


def test_bad_deploy_arguments(trained):
    from kafkaml_ray.errors import InvalidInput

    client, result, _ = trained
    inp, out = new_topics()
    with pytest.raises(InvalidInput, match="must differ"):
        client.deploy_inference(result.id, inp, inp)
    with pytest.raises(InvalidInput, match="both min_replicas and max_replicas"):
        client.deploy_inference(result.id, inp, out, min_replicas=1)
    with pytest.raises(InvalidInput, match="unknown input_format"):
        client.deploy_inference(result.id, inp, out, input_format="XML", input_config={})
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(client.settings.kafka_config())
    for f in admin.create_topics([NewTopic(inp, 1)]).values():
        f.result(30)
    with pytest.raises(InvalidInput, match="has 1 partitions, fewer than the 2 replicas"):
        client.deploy_inference(result.id, inp, out, replicas=2)


def test_the_infer_commands(trained):
    from click.testing import CliRunner

    from kafkaml_ray.cli import cli

    client, result, x = trained
    settings = client.settings
    inp, out = new_topics()
    env = {k: v for k, v in settings.env().items() if v is not None}

    def run(*args: str) -> str:
        r = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    deployed = json.loads(
        run(
            "infer", "deploy", str(result.id), "--input-topic", inp, "--output-topic", out, "--json"
        )
    )
    assert deployed["status"] == "running" and deployed["input_format"] == "RAW"
    send_inputs(settings, inp, x[:20])
    assert len(read_all(settings, out, 20)) == 20
    listed = json.loads(run("infer", "list", "--json"))
    assert [i["id"] for i in listed if i["output_topic"] == out] == [deployed["id"]]
    tapped = run("infer", "tap", str(deployed["id"]), "-n", "3")
    assert tapped.count("class ") == 3  # class and confidence of each latest prediction
    assert "stopped" in run("infer", "stop", str(deployed["id"]))
    assert "running" in run("infer", "restart", str(deployed["id"]))
    assert "deleted" in run("infer", "delete", str(deployed["id"]))
    bad = CliRunner().invoke(cli, ["infer", "show", "9999"], env=env)
    assert bad.exit_code == 1 and "no inference with id 9999" in bad.output


def test_a_result_is_served_with_the_code_it_trained_with(
    ray_cluster, broker, client, settings, example
):
    """Editing a model after training (another activation: the parameters keep their
    shapes, so its old weights load without an error) leaves what its trained result
    predicts unchanged: `predict` bit for bit, and its inference, which builds the model
    in its replicas after the edit."""
    from tests.conftest import running_listener
    from tests.train.test_training import regression_data, send_stream

    code = example("regression_mlp_pytorch.py")
    m = client.add_model("edited-later", "pytorch", code)
    dep = client.deploy_training(client.create_configuration("c", [m.id]).id, kwargs="epochs=2")
    x, y = regression_data(300)
    with running_listener(settings):
        send_stream(settings, f"train-{uuid.uuid4().hex[:6]}", dep.id, x, y)
        r = client.wait_for_deployment(dep.id, timeout=600).results[0]
    assert r.status == "finished", r.error
    before = np.asarray(client.predict(r.id, x[:40]))

    client.update_model(m.id, code=code.replace("nn.ReLU()", "nn.Tanh()"))
    np.testing.assert_array_equal(np.asarray(client.predict(r.id, x[:40])), before)
    inp, out = new_topics()
    inf = client.deploy_inference(r.id, inp, out, input_config={"data_type": "float32"})
    try:
        p = InferenceProducer(settings.bootstrap_servers, inp, "RAW", {"data_type": "float32"})
        for i, xi in enumerate(x[:40]):
            p.send(xi, key=str(i).encode())
        p.close()
        got = {
            int(msg.key()): json.loads(msg.value())["values"] for msg in read_all(settings, out, 40)
        }
        assert len(got) == 40
        served = np.asarray([got[i] for i in range(40)], dtype=np.float32)
        np.testing.assert_allclose(served, before, rtol=1e-5, atol=1e-6)
        assert client.lineage(r.id).inferences[0]["id"] == inf.id
    finally:
        client.delete_inference(inf.id)
