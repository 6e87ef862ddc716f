"""A real two-node Ray cluster on this machine: a head and a worker node, one CPU each.

With a SQLite store or the default local artifact directory, work on another node would
write to its own database and directory (results "training" forever): deploying is refused,
from the API and the CLI, and nothing is left behind. With PostgreSQL and a shared artifact
directory, a training whose Ray Train run trains on the worker node finishes with its
weights stored, and an inference whose ingress replica runs there answers its inputs.

The head's CPU is held by a placement group for the module, so what needs a CPU (data
reads, the training task, the ingress replica) can only run on the worker node, which a
custom resource ``worker_node`` marks; the tests ask Ray where each ran.
"""

import json
import os
import shutil
import subprocess
import sys
import tempfile
import uuid
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
from confluent_kafka import Consumer

from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.ingest import InferenceProducer
from kafkaml_ray.settings import Settings
from tests.conftest import add_model_unvalidated, free_ports, running_listener, wait_until
from tests.train.test_training import regression_data, send_stream

pytestmark = pytest.mark.integration

REFUSED = "the Ray cluster has 2 nodes, but "
ADVICE = "Set KAFKAML_DB to a PostgreSQL URL"


@dataclass(frozen=True)
class TwoNodes:
    settings: Settings  # the cluster's ports and ray_address; each test sets its store
    worker: str  # the worker node's id
    state_api: str  # the dashboard, for Ray's state API


@pytest.fixture(scope="module")
def two_nodes(base_settings):
    """A head (``stack.start_ray``) and a worker node (``ray start --address``), 1 CPU each,
    on ports and a KAFKAML_HOME of their own; this process connected to it for the module,
    then back to the session's Ray head if it was connected to it before."""
    import ray
    from ray.util.placement_group import placement_group, remove_placement_group

    from kafkaml_ray._private.procs import run_dir, spawn, stop_pid
    from kafkaml_ray._private.rayutil import NAMESPACE, ensure_ray
    from kafkaml_ray.stack import ray_env, start_ray, stop_ray

    home = Path(tempfile.mkdtemp(prefix="kml2n-"))  # short: Ray's socket paths
    cluster = base_settings.model_copy(
        update={
            "home": home,
            "ray_port": free_ports(3),
            "dashboard_port": free_ports(1),
            "serve_port": free_ports(1),
        }
    )
    before = ray.get_runtime_context().gcs_address if ray.is_initialized() else None
    ray.shutdown()
    worker = None
    try:
        address = start_ray(cluster, num_cpus=1)
        join = [
            sys.executable, "-m", "ray.scripts.scripts", "start", "--block",
            "--address", address,
            "--disable-usage-stats",
            "--node-ip-address", "127.0.0.1",
            "--num-cpus", "1",
            "--resources", json.dumps({"worker_node": 1}),
            "--dashboard-agent-listen-port", str(free_ports(1)),
        ]  # fmt: skip
        worker = spawn(join, run_dir(cluster) / "ray-worker.log", env=ray_env(cluster))
        cluster = cluster.model_copy(update={"ray_address": address})
        ensure_ray(cluster)

        def alive():
            nodes = [n for n in ray.nodes() if n["Alive"]]
            return len(nodes) == 2 and nodes

        nodes = wait_until(alive, 120, "the worker node to join")
        worker_id = next(n["NodeID"] for n in nodes if "worker_node" in n["Resources"])
        hold = placement_group([{"CPU": 1, "node:__internal_head__": 0.001}])
        ray.get(hold.ready(), timeout=60)
        yield TwoNodes(cluster, worker_id, f"http://127.0.0.1:{cluster.dashboard_port}")
        remove_placement_group(hold)
    finally:
        ray.shutdown()
        if worker is not None:
            stop_pid(worker.pid, what="Ray worker node")
        stop_ray(cluster)
        shutil.rmtree(home, ignore_errors=True)
        if before:
            ray.init(address=before, namespace=NAMESPACE, log_to_driver=False)


def _store(two_nodes: TwoNodes, **update) -> Settings:
    """The two-node cluster with this store and artifact location, and a control topic."""
    return two_nodes.settings.model_copy(
        update={"control_topic": f"control-{uuid.uuid4().hex[:8]}", **update}
    )


def _cli(settings: Settings, *args: str) -> subprocess.CompletedProcess:
    """``kafkaml-ray ARGS`` with these settings as its environment."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("KAFKAML_", "RAY_ADDRESS"))}
    env.update(settings.env(), KAFKAML_BOOTSTRAP=settings.bootstrap_servers)
    if settings.artifacts is None:
        env.pop("KAFKAML_ARTIFACTS")  # (env() writes the default out)
    return subprocess.run(
        [sys.executable, "-m", "kafkaml_ray", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def _actors(two_nodes: TwoNodes, class_name: str, state: str | None = "ALIVE"):
    from ray.util.state import list_actors

    filters = [("class_name", "=", class_name)] + ([("state", "=", state)] if state else [])
    return list_actors(address=two_nodes.state_api, filters=filters, detail=True, limit=1000)


def test_sqlite_or_local_artifacts_are_refused(two_nodes, broker, tmp_path):
    from kafkaml_ray import Client
    from kafkaml_ray._private.rayutil import find_actor
    from kafkaml_ray.ingest.listener import LISTENER_NAME

    settings = _store(two_nodes, db=f"sqlite:///{tmp_path / 'kafkaml.db'}", artifacts=None)
    client = Client(settings)
    add_model_unvalidated(client, "mlp", "pytorch")
    client.create_configuration("c", ["mlp"])
    with pytest.raises(InvalidInput) as refused:
        client.deploy_training("c", kwargs="epochs=1")
    text = str(refused.value)
    assert text.startswith(REFUSED + f"the metadata store is SQLite ({settings.db_url}) and ")
    assert f"the artifacts are in the local directory {settings.artifacts_uri}" in text
    assert ADVICE in text and "KAFKAML_ARTIFACTS" in text
    with pytest.raises(InvalidInput, match=REFUSED):
        client.deploy_training("c", kwargs="epochs=1", submit=True)

    # Artifacts on a shared directory do not make a SQLite file shared.
    shared = settings.model_copy(update={"artifacts": str(tmp_path / "shared")})
    with pytest.raises(InvalidInput, match=REFUSED + r"the metadata store is SQLite \(.*\): "):
        Client(shared).deploy_training("c")

    # The command line says why and exits 1: `train deploy`, and `up` (the listener).
    for args in (("train", "deploy", "c", "--kwargs", "epochs=1"), ("up", "--no-ui")):
        out = _cli(shared, *args)
        assert out.returncode == 1, (args, out.stdout, out.stderr[-2000:])
        assert out.stderr.startswith("error: " + REFUSED), (args, out.stderr[-2000:])
        assert ADVICE in out.stderr
    assert find_actor(shared, LISTENER_NAME) is None
    assert client.list_deployments() == [] and client.list_results() == []


def test_postgres_and_shared_artifacts_train_and_serve_on_the_worker_node(
    two_nodes, broker, tmp_path, postgres_url
):
    from kafkaml_ray import Client
    from kafkaml_ray.demo import register_examples

    shared = tmp_path / "shared-artifacts"  # one machine: every node sees it
    settings = _store(two_nodes, db=postgres_url, artifacts=str(shared))
    local = settings.model_copy(update={"artifacts": None})
    client = Client(settings)
    ids = register_examples(client, ["regression-mlp-pytorch"])
    config = client.create_configuration("regression", list(ids.values()))
    with pytest.raises(InvalidInput, match=REFUSED + "the artifacts are in the local directory"):
        Client(local).deploy_training(config.id)
    assert client.list_deployments() == []

    dep = client.deploy_training(config.id, batch_size=32, kwargs="epochs=2")
    with running_listener(settings):
        x, y = regression_data(300)
        send_stream(settings, f"train-{uuid.uuid4().hex[:6]}", dep.id, x, y)
        dep = client.wait_for_deployment(dep.id, timeout=300)
    result = dep.results[0]
    assert result.status == "finished", result.error
    assert result.weights_uri and result.weights_uri.startswith(str(shared))
    assert Path(result.weights_uri).is_file()
    from ray.util.state import list_tasks

    trainers = list_tasks(  # (a one-worker run trains in its task: Ray Train's local mode)
        address=two_nodes.state_api,
        filters=[("name", "=", f"train-result-{result.id}")],
        detail=True,
    )
    assert trainers and {t.node_id for t in trainers} == {two_nodes.worker}

    # Serving it with the default (local) artifact directory is refused too, from the CLI.
    with pytest.raises(InvalidInput, match=REFUSED + "the artifacts are in the local directory"):
        Client(local).deploy_inference(result.id, "in-x", "out-x")
    out = _cli(local, "infer", "deploy", str(result.id), "--input-topic", "in-x",
               "--output-topic", "out-x")  # fmt: skip
    assert out.returncode == 1 and out.stderr.startswith("error: " + REFUSED), out.stderr[-2000:]
    assert client.list_inferences() == []

    tag = uuid.uuid4().hex[:6]
    inp, outp = f"in-{tag}", f"out-{tag}"
    inf = client.deploy_inference(result.id, inp, outp)
    try:
        assert inf.status == "running"
        replicas = _actors(two_nodes, f"ServeReplica:inference-{inf.id}:KafkaIngress")
        assert [a.node_id for a in replicas] == [two_nodes.worker]
        producer = InferenceProducer(
            settings.bootstrap_servers, inp, "RAW", {"data_type": "float32", "data_reshape": "26"}
        )
        for i, xi in enumerate(x[:50]):
            producer.send(xi, key=f"k{i}".encode())
        producer.flush()
        consumer = Consumer(
            settings.kafka_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
        )
        consumer.subscribe([outp])
        got: dict[str, list] = {}

        def answered():
            m = consumer.poll(1.0)
            if m is not None and not m.error():
                got[m.key().decode()] = json.loads(m.value())["values"]
            return len(got) == 50

        wait_until(answered, 120, "50 predictions")
        consumer.close()
        assert set(got) == {f"k{i}" for i in range(50)}
        assert all(np.isfinite(v).all() and np.size(v) == 1 for v in got.values())
    finally:
        client.delete_inference(inf.id)
