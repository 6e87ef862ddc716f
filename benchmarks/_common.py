"""What the benchmarks share: a private broker and Ray head, the digits data, producing it
with `RawSink`, machine facts, and the statistics of repeated measurements (the files they
write and their Markdown: `benchmarks._report`)."""

from __future__ import annotations

import contextlib
import importlib.metadata
import os
import platform
import shutil
import statistics
import tempfile
import time
import uuid
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from kafkaml_ray.ingest import ControlMessage, RawSink
from kafkaml_ray.settings import Settings
from kafkaml_ray.stack import free_ports

__all__ = [
    "free_ports",
    "local_stack",
    "digits",
    "regression",
    "create_topic",
    "produce_digits",
    "train_once",
    "log",
    "machine_facts",
    "settle",
    "summary",
]

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")

_LIBRARIES = (
    "kafkaml-ray",
    "ray",
    "confluent-kafka",
    "numpy",
    "pyarrow",
    "torch",
    "pytorch-ignite",
    "tensorflow",
    "keras",
)


@contextlib.contextmanager
def local_stack(num_cpus: int) -> Iterator[Settings]:
    """An embedded Kafka broker and a Ray head (``num_cpus`` logical CPUs) under a fresh
    temporary KAFKAML_HOME, on free ports, with this process connected to Ray; all of it is
    stopped and removed on exit. Yields the settings (time to start is in ``startup_s``)."""
    import ray

    from kafkaml_ray.broker import EmbeddedKafka
    from kafkaml_ray.stack import connect, start_ray, stop_ray

    # Short path: Ray's unix sockets live under it and have a length limit.
    home = Path(tempfile.mkdtemp(prefix="kmlb-"))
    settings = Settings(
        home=home,
        broker_port=free_ports(2),
        ray_port=free_ports(3),
        dashboard_port=free_ports(1),
        serve_port=free_ports(1),
        validation_timeout_s=300,
    )
    kafka = EmbeddedKafka(settings)
    try:
        kafka.start()
        start_ray(settings, num_cpus=num_cpus)
        connect(settings)
        yield settings
    finally:
        ray.shutdown()
        stop_ray(settings)
        kafka.stop()
        shutil.rmtree(home, ignore_errors=True)


def digits(n: int | None = None) -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as float32 8x8 images and int64 labels, tiled to ``n`` samples
    (all 1,797 once when ``n`` is None)."""
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    x, y = x.astype(np.float32).reshape(-1, 8, 8), y.astype(np.int64)
    if n is None:
        return x, y
    idx = np.arange(n) % len(x)
    return x[idx], y[idx]


def regression(n: int = 1000, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` float32 samples of 26 features (the example regression MLP's input) and a
    float32 linear target with a little noise, as the training tests make them."""
    rng = np.random.default_rng(seed)
    x = rng.normal(size=(n, 26)).astype(np.float32)
    w = rng.normal(size=26).astype(np.float32)
    return x, (x @ w + 0.1 * rng.normal(size=n)).astype(np.float32)


def create_topic(
    settings: Settings, topic: str, partitions: int, config: dict[str, str] | None = None
) -> None:
    """Create ``topic`` with ``partitions`` partitions (and topic ``config``, e.g.
    ``{"message.timestamp.type": "LogAppendTime"}``)."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.kafka_config())
    new = NewTopic(topic, partitions, config=dict(config or {}))
    for f in admin.create_topics([new]).values():
        f.result(30)


def produce_digits(
    settings: Settings,
    topic: str,
    x: np.ndarray,
    y: np.ndarray,
    partitions: int,
    deployment_id: int = 0,
    validation_rate: float = 0.0,
    test_rate: float = 0.0,
    control_topic: str | None = None,
) -> ControlMessage:
    """Send ``x``/``y`` with `RawSink` to a new topic of ``partitions`` partitions and return
    the control message it announced (to ``control_topic``, default the settings' one).
    With several partitions the ``random`` partitioner spreads the samples evenly (the
    labels, as keys, would put only 10 distinct keys on the partitions)."""
    create_topic(settings, topic, partitions)
    config = {"partitioner": "random"} if partitions > 1 else None
    with RawSink(
        settings.bootstrap_servers,
        topic,
        deployment_id,
        validation_rate=validation_rate,
        test_rate=test_rate,
        control_topic=control_topic or settings.control_topic,
        config=config,
    ) as sink:
        sink.send_many(x, y)
    return sink.announced


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def train_once(
    client: Any, config_id: int, x: np.ndarray, y: np.ndarray, epochs: int, batch_size: int
) -> tuple[Any, str, float]:
    """Train configuration ``config_id`` on ``x``/``y`` (sent to a new topic: 10% validation,
    10% test), once more if the run fails on a busy machine. Returns the finished result,
    the data topic and the seconds the training took."""
    for attempt in (1, 2):
        start = time.perf_counter()
        dep = client.deploy_training(config_id, batch_size=batch_size, kwargs=f"epochs={epochs}")
        topic = f"train-{dep.id}-{uuid.uuid4().hex[:6]}"
        produce_digits(client.settings, topic, x, y, 1, dep.id, 0.1, 0.1)
        r = client.wait_for_deployment(dep.id, timeout=900).results[0]
        if r.status == "finished":
            return r, topic, time.perf_counter() - start
        log(f"training {r.model_name} (attempt {attempt}): {r.status}: {r.error}")
    raise RuntimeError(f"training {r.model_name}: {r.status}: {r.error}")


def _version(name: str) -> str | None:
    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return None


def machine_facts() -> dict[str, Any]:
    """The machine and software a result was measured on."""
    cpu = ""
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem = ""
    with contextlib.suppress(OSError, IndexError):
        kib = int(Path("/proc/meminfo").read_text().split()[1])
        mem = f"{kib / 2**20:.1f} GiB"
    return {
        "cores": os.cpu_count(),
        "cpu": cpu,
        "memory": mem,
        "load_average_1m_at_start": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "platform": platform.platform(),
        "versions": {name: _version(name) for name in _LIBRARIES},
        "started": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
    }


def _cpu_busy(interval: float) -> float:
    """The share of all cores busy over ``interval`` seconds (from /proc/stat)."""

    def snap() -> tuple[int, int]:
        fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
        return sum(fields), fields[3] + fields[4]  # total, idle + iowait

    total0, idle0 = snap()
    time.sleep(interval)
    total1, idle1 = snap()
    return 1.0 - (idle1 - idle0) / max(1, total1 - total0)


def settle(max_s: float = 15.0, busy_below: float = 0.5) -> None:
    """Wait until the CPUs are mostly idle (two 0.5 s samples under ``busy_below``), e.g.
    while Ray replaces the worker processes of a finished run, so that no timed step pays
    for the previous one; gives up after ``max_s`` (other jobs may keep the machine busy)."""
    start = time.monotonic()
    quiet = 0
    while quiet < 2 and time.monotonic() - start < max_s:
        quiet = quiet + 1 if _cpu_busy(0.5) < busy_below else 0


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median, min, max and spread ((max - min) / median) of repeated measurements."""
    med = statistics.median(values)
    return {
        "median": med,
        "min": min(values),
        "max": max(values),
        "spread": (max(values) - min(values)) / med if med else 0.0,
        "values": list(values),
    }
