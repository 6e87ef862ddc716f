"""Faults injected on the real stack (real broker, real Ray): each case ends with nothing lost
and every affected run in a clear state.

- the control listener killed (SIGKILL) in the middle of a batch, then started again;
- PostgreSQL stopped and started again under a running listener;
- the broker stopped and restarted in the middle of an inference, and of a training read;
- a Ray Train worker killed: the result fails with a clear error and its resources return.
"""

from __future__ import annotations

import glob
import os
import signal
import subprocess
import sys
import time
import uuid
from pathlib import Path

import numpy as np
import pytest
from sqlalchemy import select

from kafkaml_ray.ingest import ControlMessage, TopicRange
from kafkaml_ray.store import Datasource, DatasourceStatus, Store
from tests.conftest import running_listener, running_task, wait_until
from tests.serve.test_inference import new_topics, provenance, read_all, send_inputs, trained  # noqa: F401
from tests.train.test_training import digits_data, send_stream

pytestmark = pytest.mark.integration

LISTENER = """
import threading
from kafkaml_ray.ingest.listener import ControlListener
from kafkaml_ray.settings import Settings
ControlListener(Settings.from_env(), None, group_id={group!r}).run(threading.Event())
"""


def _listener_process(settings, group: str) -> subprocess.Popen:
    return subprocess.Popen(
        [sys.executable, "-c", LISTENER.format(group=group)],
        env={**os.environ, **settings.env()},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def test_the_listener_killed_mid_batch_loses_no_control_message(broker, settings):
    from confluent_kafka import Producer

    n = 200
    producer = Producer(settings.kafka_config())
    for i in range(n):
        if i % 10 == 7:  # poison among them: stored as refused, never lost
            key, value, headers = b"\x01", b"[" * 50_000, None
        else:
            msg = ControlMessage(deployment_id=i + 1, ranges=[TopicRange("d", 0, 0, 5)])
            key, value, headers = msg.to_kafka()
        producer.produce(settings.control_topic, value, key, headers=headers)
    producer.flush(30)
    store = Store(settings.db_url)

    def stored() -> list[Datasource]:
        with store.session() as s:
            return s.query(Datasource).order_by(Datasource.source_offset).all()

    group = f"listener-{uuid.uuid4().hex[:8]}"
    first = _listener_process(settings, group)
    try:
        wait_until(lambda: len(stored()) >= 30, 120, "the first listener to store some")
        first.send_signal(signal.SIGKILL)  # in the middle of its batch of up to 100
        first.wait(30)
    finally:
        first.kill()
    killed_at = len(stored())
    second = _listener_process(settings, group)
    try:
        wait_until(lambda: len(stored()) == n, 120, f"all {n} control messages stored")
        time.sleep(2)  # (anything stored twice would show up now)
    finally:
        second.terminate()
        second.wait(30)
    rows = stored()
    assert [r.source_offset for r in rows] == list(range(n))  # each once, none lost
    refused = [r.source_offset for r in rows if r.status == DatasourceStatus.REFUSED]
    assert refused == [i for i in range(n) if i % 10 == 7]
    assert all("nested too deeply" in r.error for r in rows if r.status == "refused")
    print(f"listener killed after {killed_at} of {n} stored; all {n} stored once")


def _postgres(action: str) -> None:
    """Stop or start the tests' private PostgreSQL server (scripts/test.sh's)."""
    data = os.environ["KAFKAML_TEST_POSTGRES_DATA"]
    pg_ctl = sorted(glob.glob("/usr/lib/postgresql/*/bin/pg_ctl"))[-1]
    cmd = [pg_ctl, "-D", data, "-l", str(Path(data).parent / "log"), "-w", "-m", "fast", action]
    if os.geteuid() == 0:  # PostgreSQL runs as its own user (see scripts/test.sh)
        cmd = ["runuser", "-u", "postgres", "--", *cmd]
    subprocess.run(cmd, check=True, capture_output=True, timeout=120)


def _control_messages(settings, first: int, n: int) -> None:
    from confluent_kafka import Producer

    producer = Producer(settings.kafka_config())
    for i in range(first, first + n):
        msg = ControlMessage(deployment_id=i + 1, ranges=[TopicRange("d", 0, 0, 5)])
        key, value, headers = msg.to_kafka()
        producer.produce(settings.control_topic, value, key, headers=headers)
    producer.flush(30)


def test_postgres_restarted_under_the_listener_loses_no_control_message(
    broker, settings, postgres_url
):
    if not os.environ.get("KAFKAML_TEST_POSTGRES_DATA"):
        pytest.skip("needs the private PostgreSQL server of scripts/test.sh")
    settings = settings.model_copy(update={"db": postgres_url})
    store = Store(settings.db_url)

    def stored() -> list[int]:
        with store.session() as s:
            return list(s.scalars(select(Datasource.source_offset).order_by("source_offset")))

    _control_messages(settings, 0, 50)
    listener = _listener_process(settings, f"listener-{uuid.uuid4().hex[:8]}")
    try:
        wait_until(lambda: len(stored()) == 50, 120, "the listener to store the first 50")
        _postgres("stop")
        try:
            _control_messages(settings, 50, 50)  # sent while the store is down
            time.sleep(5)  # the listener reads them, cannot store them, and retries
            assert listener.poll() is None, "the listener died with its store"
        finally:
            _postgres("start")
        wait_until(lambda: len(stored()) == 100, 120, "all 100 control messages stored")
        time.sleep(2)  # (anything stored twice would show up now)
        assert listener.poll() is None
    finally:
        listener.terminate()
        listener.wait(30)
    assert stored() == list(range(100))  # each once, none lost
    with store.session() as s:
        statuses = set(s.scalars(select(Datasource.status)))
    assert statuses == {DatasourceStatus.UNKNOWN_DEPLOYMENT}  # well formed; no deployments
    store.dispose()


def test_the_broker_restarted_mid_inference_loses_no_prediction(trained, broker):  # noqa: F811
    client, result, x = trained
    settings = client.settings
    inp, out = new_topics()
    inf = client.deploy_inference(result.id, inp, out, batch_size=32)
    data = np.concatenate([x] * 2)[:3000]
    send_inputs(settings, inp, data[:1500])
    wait_until(lambda: read_all(settings, out, 1, timeout=5), 120, "the first predictions")
    broker.stop()
    time.sleep(3)
    broker.start()
    send_inputs(settings, inp, data[1500:])
    read_all(settings, out, 3000, timeout=300, distinct=True)
    got = read_all(settings, out, 10**9, timeout=10)
    seen = {provenance(m) for m in got}
    assert len(seen) == 3000  # every input offset has its prediction
    print(f"broker restarted mid-inference: {len(got) - 3000} duplicates, 0 lost")
    client.delete_inference(inf.id)


def test_the_broker_restarted_mid_training_read_ends_clearly(
    ray_cluster, broker, client, settings, topic
):
    from kafkaml_ray.demo import register_examples

    ids = register_examples(client, ["digits-cnn-pytorch"])
    config = client.create_configuration("restart", list(ids.values()))
    dep = client.deploy_training(config.id, kwargs="epochs=1")
    x, y = digits_data()
    x, y = np.concatenate([x] * 6), np.concatenate([y] * 6)
    with running_listener(settings):
        send_stream(settings, topic, dep.id, x, y)
        wait_until(
            lambda: client.get_deployment(dep.id).results[0].status == "training",
            120,
            "the run to start reading",
        )
        broker.stop()
        time.sleep(3)
        broker.start()
        dep = client.wait_for_deployment(dep.id, timeout=600)
    r = dep.results[0]
    # Either the read resumed (all of it, nothing lost) or it failed saying why.
    assert r.status in ("finished", "failed"), r.status
    if r.status == "finished":
        ds = client.get_datasource(dep.datasource_id)
        assert ds.total_msg == len(x)
        assert r.weights_uri
    else:
        assert "broker" in r.error or "read" in r.error, r.error
    print(f"broker restarted mid-read: the result {r.status} ({r.error or 'all read'})")


def test_a_killed_train_worker_fails_the_result_clearly_and_frees_its_cpus(
    ray_cluster, broker, client, settings, topic
):
    import ray

    from kafkaml_ray.demo import register_examples

    ids = register_examples(client, ["digits-cnn-pytorch"])
    config = client.create_configuration("victim", list(ids.values()))
    dep = client.deploy_training(config.id, batch_size=4, kwargs="epochs=500")
    free = ray.available_resources().get("CPU", 0)
    x, y = digits_data()
    with running_listener(settings):
        send_stream(settings, topic, dep.id, x, y)
        wait_until(lambda: client.get_deployment(dep.id).results[0].history, 300, "an epoch")
        # A one-worker run trains in its own Ray task (Ray Train's local mode).
        workers = running_task(f"train-result-{dep.results[0].id}")
        os.kill(workers[0].worker_pid, signal.SIGKILL)
        dep = client.wait_for_deployment(dep.id, timeout=300)
    r = dep.results[0]
    assert r.status == "failed", (r.status, r.error)
    assert r.error and len(r.error) < 2000 and "\n" not in r.error.strip()
    print(f"killed worker: {r.error}")
    wait_until(
        lambda: ray.available_resources().get("CPU", 0) >= free,
        120,
        f"CPUs freed ({free} free before the run)",
    )


def _committed(settings, topic: str, until: int, timeout: float) -> list:
    """The messages of ``topic`` that a ``read_committed`` reader sees (what committed
    transactions wrote), read until ``until`` came or ``timeout`` passed, then 5 s more."""
    from confluent_kafka import Consumer

    c = Consumer(
        settings.kafka_config(
            **{
                "group.id": uuid.uuid4().hex,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
                "isolation.level": "read_committed",
            }
        )  # fmt: skip
    )
    c.subscribe([topic])
    out, deadline, quiet = [], time.monotonic() + timeout, None
    while time.monotonic() < deadline:
        got = [m for m in c.consume(num_messages=1000, timeout=0.5) if m.error() is None]
        out += got
        if len(out) >= until:  # (and whatever comes late: a duplicate would)
            quiet = quiet or time.monotonic() + 5
            if time.monotonic() > quiet:
                break
    c.close()
    return out


def test_exactly_once_through_a_killed_replica_a_broker_restart_and_scaling(
    trained,  # noqa: F811
    broker,
):
    """An inference deployed exactly once: SIGKILL to a replica mid-stream, the broker
    restarted mid-stream, and its replicas scaled up and down under a backlog. A
    ``read_committed`` reader of the output topic and of the dead-letter topic sees each
    input offset once: none missing, none twice."""
    import ray

    from kafkaml_ray.store import Inference

    client, result, x = trained
    settings = client.settings
    from confluent_kafka.admin import AdminClient, NewTopic

    inp, out = new_topics()
    admin = AdminClient(settings.kafka_config())
    admin.create_topics([NewTopic(inp, 4)])[inp].result(30)
    inf = client.deploy_inference(result.id, inp, out, replicas=2, batch_size=32, exactly_once=True)
    assert inf.exactly_once
    data = np.concatenate([x] * 3)[:4000]
    bad = [b"not 64 floats"] * 20

    def scale(replicas: int) -> None:
        with client.store.session() as s:
            s.get_one(Inference, inf.id).replicas = replicas
        client.restart_inference(inf.id)  # (Serve changes the replica count in place)

    send_inputs(settings, inp, data[:1000], partitions=4, bad=bad)
    wait_until(lambda: _committed(settings, out, 1, 5), 120, "the first committed predictions")
    victim = next(
        a for a in ray.util.list_named_actors(all_namespaces=True)
        if "KafkaIngress" in a["name"] and f"inference-{inf.id}" in a["name"]
    )  # fmt: skip
    handle = ray.get_actor(victim["name"], namespace=victim["namespace"])
    os.kill(ray.get(handle.__ray_call__.remote(lambda self: os.getpid())), signal.SIGKILL)
    send_inputs(settings, inp, data[1000:2000], partitions=4)
    broker.stop()
    time.sleep(3)
    broker.start()
    send_inputs(settings, inp, data[2000:3000], partitions=4)
    scale(3)
    send_inputs(settings, inp, data[3000:], partitions=4)
    scale(1)
    outputs = _committed(settings, out, 4000, 300)
    dead = _committed(settings, out + ".dlq", 20, 60)
    seen: dict[tuple[bytes, bytes], int] = {}
    for m in outputs + dead:
        seen[provenance(m)] = seen.get(provenance(m), 0) + 1
    twice = {k: n for k, n in seen.items() if n > 1}
    print(f"exactly once: {len(outputs)} predictions, {len(dead)} dead letters, {len(twice)} twice")
    assert (len(outputs), len(dead), twice) == (4000, 20, {})
    assert len(seen) == 4020  # every input offset, once
    client.delete_inference(inf.id)
