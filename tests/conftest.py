"""Session fixtures: a real embedded Kafka broker and a real local Ray head, on free ports,
under a temporary KAFKAML_HOME. Integration tests use them; nothing here is mocked."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import signal
import tempfile
import threading
import time
import uuid
from pathlib import Path

import hypothesis
import numpy as np
import pytest

from kafkaml_ray._private.procs import free_ports
from kafkaml_ray.settings import Settings

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
EXAMPLES = Path(__file__).resolve().parent.parent / "kafkaml_ray" / "examples"


# -- where the suite's time goes: each fixture's setup, and its finalizers (teardown) ---------
class _FixtureTimes:
    """Seconds per fixture, setup and teardown apart, printed after ``--durations`` (which
    gives the tests). A plugin of its own: a conftest's hooks see only the fixtures of its
    folder's tests, not the session's (the broker, the Ray head)."""

    def __init__(self) -> None:
        self.seconds: dict[tuple[str, str], list[float]] = {}

    @pytest.hookimpl(hookwrapper=True)
    def pytest_fixture_setup(self, fixturedef, request):
        name, began = fixturedef.argname, []

        def took(phase: str, since: float) -> None:
            self.seconds.setdefault((name, phase), []).append(time.perf_counter() - since)

        # Finalizers run last registered first: this one after the fixture's own teardown...
        fixturedef.addfinalizer(lambda: began and took("teardown", began[0]))
        start = time.perf_counter()
        yield
        took("setup", start)
        # ...and this one before it.
        fixturedef.addfinalizer(lambda: began.append(time.perf_counter()))

    def pytest_terminal_summary(self, terminalreporter):
        rows = sorted(self.seconds.items(), key=lambda kv: -sum(kv[1]))[:15]
        if not rows or sum(rows[0][1]) < 1:
            return
        terminalreporter.write_sep("=", "slowest fixtures (total seconds, calls)")
        for (name, phase), times in rows:
            terminalreporter.write_line(f"{sum(times):8.2f}s {len(times):4d}x {phase:8s} {name}")


def pytest_configure(config):
    config.pluginmanager.register(_FixtureTimes(), "fixture-times")


@pytest.fixture(scope="session")
def session_home():
    # Short path: Ray's unix sockets live under it in places and have a length limit.
    home = Path(tempfile.mkdtemp(prefix="kml-"))
    yield home
    shutil.rmtree(home, ignore_errors=True)


@pytest.fixture(scope="session")
def base_settings(session_home) -> Settings:
    """Settings of the session's broker and Ray head (each test gets its own store)."""
    return Settings(
        home=session_home,
        broker_port=free_ports(2),
        ray_port=free_ports(3),
        dashboard_port=free_ports(1),
        serve_port=free_ports(1),
        validation_timeout_s=60,
        validation_memory_mb=4096,
    )


@pytest.fixture(scope="session")
def broker(base_settings):
    """A running embedded Kafka broker for the whole session."""
    from kafkaml_ray.broker import EmbeddedKafka

    kafka = EmbeddedKafka(base_settings)
    kafka.start()
    yield kafka
    kafka.stop()


@pytest.fixture(scope="session")
def ray_cluster(base_settings):
    """A real local Ray head (with the job server), and this process connected to it."""
    import ray

    from kafkaml_ray._private.rayutil import NAMESPACE
    from kafkaml_ray.stack import start_ray, stop_ray

    # Started with SIGINT ignored, as a head started from a background job or a service
    # is (bash gives `&` jobs SIGINT ignored, and every process below keeps it): Ray's
    # cancel must still stop a training there (it raises KeyboardInterrupt through the
    # SIGINT handler).
    previous = signal.signal(signal.SIGINT, signal.SIG_IGN)
    try:
        address = start_ray(base_settings, num_cpus=4)
    finally:
        signal.signal(signal.SIGINT, previous)
    ray.init(address=address, namespace=NAMESPACE, log_to_driver=False)
    _RAY_ADDRESS_FILE["recorded"] = _ray_address_file().read_text()
    yield address
    ray.shutdown()
    stop_ray(base_settings)


_RAY_ADDRESS_FILE: dict[str, str] = {}


def _ray_address_file() -> Path:
    from ray._common.utils import get_ray_address_file

    return Path(get_ray_address_file(None))


@pytest.fixture(autouse=True)
def _keep_ray_address_file():
    """`ray start --head` records its address in a file the whole machine shares, where a
    Ray job's driver finds its cluster ("auto"): a test that starts another head (the
    fresh-machine stack, the two-node cluster) must not leave it naming that one: each
    test starts and ends with it naming the session's head."""

    def restore() -> None:
        recorded = _RAY_ADDRESS_FILE.get("recorded")
        path = _ray_address_file()
        if recorded is not None and (not path.exists() or path.read_text() != recorded):
            path.write_text(recorded)

    restore()
    yield
    restore()


@pytest.fixture
def settings(base_settings, tmp_path) -> Settings:
    """The session's services with a fresh metadata store, artifact directory and control
    topic (so tests never see each other's control messages)."""
    return base_settings.model_copy(
        update={
            "db": f"sqlite:///{tmp_path / 'kafkaml.db'}",
            "artifacts": str(tmp_path / "artifacts"),
            "control_topic": f"control-{uuid.uuid4().hex[:8]}",
        }
    )


@pytest.fixture
def topic():
    """A fresh topic name."""
    return f"data-{uuid.uuid4().hex[:8]}"


@contextlib.contextmanager
def running_listener(settings: Settings, handler="default"):
    """The control listener polling in a thread of this process."""
    from kafkaml_ray.ingest.listener import ControlListener
    from kafkaml_ray.train.launch import on_datasource

    listener = ControlListener(
        settings,
        on_datasource if handler == "default" else handler,
        group_id=f"listener-{uuid.uuid4().hex[:8]}",
    )
    stop = threading.Event()
    thread = threading.Thread(target=listener.run, args=(stop,), daemon=True)
    thread.start()
    try:
        yield listener
    finally:
        stop.set()
        thread.join(30)
        listener.close()


def wait_until(predicate, timeout: float = 60.0, what: str = "condition"):
    """Poll ``predicate`` until it returns something true; fail after ``timeout``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.3)
    raise AssertionError(f"timed out after {timeout:.0f}s waiting for {what}")


def running_task(name: str, timeout: float = 60.0) -> list:
    """The RUNNING Ray tasks named ``name`` (with details), once Ray's state API reports
    them: it learns of task states from events the workers buffer, so it is asked until
    it has."""
    from ray.util.state import list_tasks

    return wait_until(
        lambda: list_tasks(filters=[("name", "=", name), ("state", "=", "RUNNING")], detail=True),
        timeout,
        f"task {name} RUNNING in Ray's state API",
    )


def add_model_unvalidated(client, name: str, framework: str, code: str = "...") -> int:
    """A model row without the Ray validation (for tests of other parts)."""
    from kafkaml_ray.store import MLModel

    with client.store.session() as s:
        row = MLModel(name=name, framework=framework, code=code)
        s.add(row)
        s.flush()
        return row.id


def send_like_kafka_ml(settings, topic, dep_id, x, y):
    """The bytes Kafka-ML's own RawSink writes (kafka-python): ``x.tobytes()`` values, the
    label's bytes as keys, ranges from end positions read before and after, types and shapes
    inferred from the first sample (a numpy scalar label is announced as "1"), and the
    deployment id as a one-byte key."""
    import json

    from kafka import KafkaConsumer, KafkaProducer, TopicPartition

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    positions = KafkaConsumer(bootstrap_servers=settings.bootstrap_servers)
    tp = TopicPartition(topic, 0)
    producer.send(topic, b"", partition=0).get(30)  # creates the topic; not in the range
    start = positions.end_offsets([tp])[tp]
    for xi, yi in zip(x, y, strict=True):
        producer.send(topic, value=xi.tobytes(), key=yi.tobytes(), partition=0)
    producer.flush()
    end = positions.end_offsets([tp])[tp]
    control = {
        "topic": f"{topic}:0:{start}:{end}",
        "input_format": "RAW",
        "input_config": {
            "data_type": str(x[0].dtype),
            "label_type": str(y[0].dtype),
            "data_reshape": " ".join(map(str, x[0].shape)),
            "label_reshape": str(np.asarray(y[0]).size),  # its len() of a scalar label: "1"
        },
        "description": "Kafka-ML RawSink",
        "validation_rate": 0.1,
        "test_rate": 0.1,
        "total_msg": len(x),
    }
    key = bytes([dep_id])
    producer.send(settings.control_topic, key=key, value=json.dumps(control).encode()).get(30)
    producer.close()
    positions.close()


def send_like_kafka_ml_online(settings, topic, dep_id, x, y):
    """The bytes Kafka-ML's own OnlineRawSink writes (kafka-python): on the first send, the
    control message (the plain topic name, ``"incremental": true``, ``total_msg`` null,
    ``test_rate`` 0, types and shapes inferred from the first sample, a numpy scalar label
    announced as "1", a one-byte key), then ``x.tobytes()`` values with the label's bytes as
    keys; ``online_close()`` only flushes: no closing control message."""
    import json

    from kafka import KafkaProducer

    def shape(v):  # Kafka-ML's shape_to_string
        return " ".join(map(str, v.shape)) if isinstance(v, np.ndarray) else "1"

    producer = KafkaProducer(bootstrap_servers=settings.bootstrap_servers)
    for i, (xi, yi) in enumerate(zip(x, y, strict=True)):
        if i == 0:
            control = {
                "topic": topic,
                "unsupervised_topic": None,
                "input_format": "RAW",
                "description": "Kafka-ML OnlineRawSink",
                "input_config": {
                    "data_type": str(np.asarray(xi).dtype),
                    "label_type": str(np.asarray(yi).dtype),
                    "data_reshape": shape(xi),
                    "label_reshape": shape(yi),
                },
                "validation_rate": 0.1,
                "test_rate": 0,
                "total_msg": None,
                "dataset_restrictions": {},
                "incremental": True,
            }
            key = bytes([dep_id])
            producer.send(settings.control_topic, key=key, value=json.dumps(control).encode())
            producer.flush()
        producer.send(topic, key=yi.tobytes(), value=xi.tobytes())
    producer.flush()
    producer.close()


@pytest.fixture
def postgres_url():
    """A fresh, empty database on the tests' PostgreSQL server (KAFKAML_TEST_POSTGRES, which
    scripts/test.sh sets), dropped afterwards; skipped without one."""
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url
    from sqlalchemy.pool import NullPool

    server = os.environ.get("KAFKAML_TEST_POSTGRES")
    if not server:
        pytest.skip("KAFKAML_TEST_POSTGRES is not set (scripts/test.sh sets it)")
    name = f"kml_{uuid.uuid4().hex[:12]}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as c:
        c.execute(text(f'CREATE DATABASE "{name}"'))
    yield make_url(server).set(database=name).render_as_string(hide_password=False)
    with admin.connect() as c:
        c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    admin.dispose()


@pytest.fixture
def client(settings):
    """A Client of the test's own store. Whatever Ray work the test left running in it
    (trainings, online runs, searches, inferences) is stopped afterwards, whatever happened
    in the test: a leftover would hold CPUs that the tests after it wait for."""
    from kafkaml_ray import Client

    client = Client(settings)
    yield client
    end_ray_work(client)


def end_ray_work(client) -> None:
    """Stop every unfinished deployment, search and inference in ``client``'s store."""
    if not Path(client.settings.db_url.removeprefix("sqlite:///")).exists():
        return  # (the test opened no store)
    for what, items, done, stop in [
        ("deployment", client.list_deployments, lambda d: d.done, client.stop_training),
        ("search", client.list_tunes, lambda t: t.done, client.stop_tune),
        (
            "inference",
            client.list_inferences,
            lambda i: i.status in ("stopped", "failed"),
            client.stop_inference,
        ),
    ]:
        for item in items():
            if done(item):
                continue
            try:
                stop(item.id)
            except Exception:  # noqa: BLE001 - the next ones are stopped all the same
                logging.getLogger(__name__).exception("stopping %s %s", what, item.id)


def cpus_free(count: float, timeout: float = 120.0) -> float:
    """Wait until ``count`` CPUs of the session's Ray cluster are free (a test that needs
    them checks first); otherwise fail saying who holds them. The CPUs free now."""
    import ray

    from kafkaml_ray._private.rayutil import resource_wait

    deadline = time.monotonic() + timeout
    while (free := ray.available_resources().get("CPU", 0.0)) + 1e-9 < count:
        if time.monotonic() > deadline:
            raise AssertionError(
                f"{count:g} CPUs are not free after {timeout:.0f}s: {resource_wait({'CPU': count})}"
            )
        time.sleep(0.5)
    return free


@pytest.fixture
def example():
    """The text of an example model file."""
    return lambda name: (EXAMPLES / name).read_text()


# Hypothesis (tests/ingest/test_poison.py): a bounded run in CI; `--hypothesis-profile=deep`
# for more.
hypothesis.settings.register_profile("ci", max_examples=100, deadline=None, database=None)
hypothesis.settings.register_profile("deep", max_examples=5000, deadline=None)
hypothesis.settings.load_profile("ci")


@pytest.fixture(scope="session")
def trained_digits(ray_cluster, broker, base_settings, tmp_path_factory):
    """A digits CNN trained once for the session (3 epochs), in a store of its own:
    (client, result, the images). Inference tests serve it (`tests/test_inference.trained`)."""
    from sklearn.datasets import load_digits

    from kafkaml_ray import Client
    from kafkaml_ray.demo import register_examples
    from kafkaml_ray.ingest import RawSink

    home = tmp_path_factory.mktemp("inference")
    settings = base_settings.model_copy(
        update={
            "db": f"sqlite:///{home / 'kafkaml.db'}",
            "artifacts": str(home / "artifacts"),
            "control_topic": f"control-{uuid.uuid4().hex[:8]}",
        }
    )
    client = Client(settings)
    ids = register_examples(client, ["digits-cnn-pytorch"])
    config = client.create_configuration("digits", list(ids.values()))
    dep = client.deploy_training(config.id, kwargs="epochs=3")
    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32).reshape(-1, 8, 8)
    with running_listener(settings):
        with RawSink(
            settings.bootstrap_servers,
            f"train-{uuid.uuid4().hex[:6]}",
            dep.id,
            validation_rate=0.1,
            test_rate=0.1,
            control_topic=settings.control_topic,
        ) as sink:
            sink.send_many(x, y)
        dep = client.wait_for_deployment(dep.id, timeout=600)
    result = dep.results[0]
    assert result.status == "finished", result.error
    return client, result, x
