"""What is measured and how it is built: the sizes of a run (`Plan`, `SIZES`), the model
cases and training them through the library, and starting a pipeline (ours, the baseline or
echo, on topics of its own, with its collector and producers) as a `Pipeline`."""

from __future__ import annotations

import time
import uuid
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from benchmarks._common import create_topic, digits, log, regression, train_once
from benchmarks.inference.loops import Collector, LoopWorker
from kafkaml_ray.serve.options import INGRESS_CPUS, PREDICTOR_CPUS
from kafkaml_ray.settings import Settings

__all__ = [
    "Plan",
    "SIZES",
    "MODELS",
    "HEADLINE",
    "VARIANTS",
    "GPU_VARIANT",
    "Trained",
    "train_models",
    "Pipeline",
    "start_pipeline",
    "log",
]

SIDES = ("ours", "baseline", "echo")
LOG_APPEND = {"message.timestamp.type": "LogAppendTime"}
REQUEST = 256  # samples per request, as in the paper
TRAIN_BATCH = 32


@dataclass(frozen=True)
class Plan:
    size: str
    epochs: int
    warmup: int  # messages, also used to check the predictions
    backlog: int  # messages per throughput round
    repeat: int
    loads: tuple[int, ...]  # offered messages per second
    load_s: float  # per round; each load is measured in `load_rounds` rounds, pooled
    clients: tuple[int, ...]
    replicas: tuple[int, ...]
    requests: int  # requests per client per grid cell
    batch_size: int = 512  # ours: the library's default
    profile_s: float = 4.0
    round_s: float = 2.0  # timed throughput rounds are sized to last about this long
    load_rounds: int = 3


SIZES = {
    "small": Plan(
        "small",
        epochs=3,
        warmup=300,
        backlog=3000,
        repeat=3,
        loads=(20, 200, 1000),
        load_s=5.0,
        clients=(1, 4, 16),
        replicas=(1, 2),
        requests=2,
    ),
    "full": Plan(
        "full",
        epochs=2,
        warmup=1000,
        backlog=20000,
        repeat=3,
        loads=(20, 200, 1000, 4000),
        load_s=10.0,
        clients=(1, 2, 4, 8, 16, 32),
        replicas=(1, 2, 4),
        requests=5,
    ),
}
SIZES["quick"] = Plan(
    "quick",
    epochs=1,
    warmup=100,
    backlog=500,
    repeat=1,
    loads=(20, 200),
    load_s=2.0,
    clients=(1, 4),
    replicas=(1, 2),
    requests=1,
    profile_s=2.0,
    round_s=1.0,
    load_rounds=1,
)
PAPER_CLIENTS, PAPER_REPLICAS = (1, 2, 4, 8, 16, 32), (1, 2, 4)


# -- the models and their data -------------------------------------------------------------
def _tile(x: np.ndarray, y: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(n) % len(x)
    return x[idx], y[idx]


@dataclass(frozen=True)
class ModelCase:
    name: str
    example: str
    input_config: dict[str, str]
    classifier: bool
    base: Callable[[], tuple[np.ndarray, np.ndarray]]  # the training set

    def data(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        return _tile(*self.base(), n)


MODELS = {
    "digits-cnn": ModelCase(
        "digits-cnn",
        "digits-cnn-pytorch",
        {"data_type": "float32", "data_reshape": "8 8"},
        True,
        digits,
    ),
    "regression-mlp": ModelCase(
        "regression-mlp",
        "regression-mlp-pytorch",
        {"data_type": "float32", "data_reshape": "26"},
        False,
        lambda: regression(2000, seed=0),
    ),
}
HEADLINE = "digits-cnn"


@dataclass
class Trained:
    result_id: int
    framework: str
    code: str
    imports: str
    weights_uri: str
    input_shape: list[int] | None
    test_metrics: dict[str, Any]
    wall_s: float

    def model_args(self) -> tuple:
        return (self.framework, self.code, self.imports, self.input_shape, None, self.weights_uri)


def train_models(settings: Settings, epochs: int) -> tuple[Any, dict[str, Trained]]:
    """Train every case's example model through the library, one after the other: one
    configuration and training deployment each, its data sent by `RawSink` to the control
    topic that the control listener (started as `kafkaml-ray up` starts it) reads. A run
    that fails (e.g. a Ray Train health check timing out on a busy machine) is redone once."""
    from kafkaml_ray import Client
    from kafkaml_ray.demo import register_examples
    from kafkaml_ray.ingest.listener import start_listener, stop_listener
    from kafkaml_ray.train.launch import on_datasource

    client = Client(settings)
    start_listener(settings, on_datasource)
    ids = register_examples(client, [c.example for c in MODELS.values()])
    out = {}
    for name, case in MODELS.items():
        config = client.create_configuration(f"bench-{name}", [ids[case.example]])
        r, _, seconds = train_once(client, config.id, *case.base(), epochs, TRAIN_BATCH)
        m = client.get_model(r.model_id)
        out[name] = Trained(
            r.id,
            m.framework,
            m.code,
            m.imports,
            r.weights_uri,
            m.input_shape,
            r.test_metrics,
            seconds,
        )
    stop_listener(settings)
    return client, out


#: Diagnostic pipelines (digits CNN, 1 replica) measured beside the three main ones, each
#: changing one setting: (key, side, options of `start_pipeline`, light load measured too).
VARIANTS = (
    ("ours_batch_64", "ours", {"batch_size": 64, "max_wait_ms": 5.0}, True),
    ("ours_exactly_once", "ours", {"exactly_once": True}, True),
    ("baseline_no_flush", "baseline", {"flush_each": False}, True),
)
#: Ours with its Predictor on a whole GPU (``python -m benchmarks.gpu``; needs one).
GPU_VARIANT = ("ours_gpu", "ours", {"gpu_fraction": 1.0}, True)


# -- starting and stopping a pipeline ------------------------------------------------------
@dataclass
class Pipeline:
    side: str
    model: str
    replicas: int
    input_topic: str
    output_topic: str
    collector: Collector
    producer: Any
    start_s: float
    pids: dict[str, list[int]]
    stop_fn: Callable[[], Any]
    info: dict[str, Any] = field(default_factory=dict)
    handle: Any = None  # ours: the Predictor's deployment handle, for `LoopWorker`: actors
    sent: int = 0
    fast: Any = None  # a plain producer for backlogs
    encoded: list[bytes] = field(default_factory=list)

    def stop(self) -> Any:
        self.collector.close()
        self.producer.flush()
        self.fast.flush(30)
        return self.stop_fn()


def _replica_pids(inference_id: int) -> dict[str, list[int]]:
    import ray
    from ray.util.state import list_actors

    pids: dict[str, list[int]] = defaultdict(list)
    address = ray.get_runtime_context().gcs_address  # this cluster, not some other one
    for a in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000):
        if f"inference-{inference_id}:" in (a.class_name or ""):
            pids[a.class_name.rsplit(":", 1)[-1]].append(a.pid)
    return dict(pids)


def start_pipeline(
    side: str,
    settings: Settings,
    client: Any,
    case: ModelCase,
    trained: Trained,
    replicas: int,
    batch_size: int,
    max_wait_ms: float | None = None,
    flush_each: bool = True,
    exactly_once: bool = False,
    gpu_fraction: float = 0.0,
) -> Pipeline:
    """New input/output topics (``replicas`` partitions each), a collector on the output,
    an `InferenceProducer` on the input, then the pipeline itself: ours deployed with
    `Client.deploy_inference` (ready when it returns), or ``replicas`` `LoopWorker` actors."""
    import ray
    from confluent_kafka import Producer

    from kafkaml_ray.ingest import InferenceProducer
    from kafkaml_ray.ingest.sinks import producer_config

    tag = f"{side}-{case.name}-{replicas}r-{uuid.uuid4().hex[:6]}"
    inp, out = f"in-{tag}", f"out-{tag}"
    create_topic(settings, inp, replicas)
    create_topic(settings, out, replicas, LOG_APPEND)
    collector = Collector(settings, out, replicas)
    producer = InferenceProducer(
        settings.bootstrap_servers,
        inp,
        "RAW",
        case.input_config,
        config={**settings.kafka, "linger.ms": 0},
    )
    start = time.perf_counter()
    info: dict[str, Any] = {}
    if side == "ours":
        from ray import serve

        from kafkaml_ray.serve.options import app_name

        kw: dict[str, Any] = {"exactly_once": exactly_once, "gpu_fraction": gpu_fraction}
        if max_wait_ms is not None:
            kw["max_wait_ms"] = max_wait_ms
        inf = client.deploy_inference(
            trained.result_id, inp, out, replicas=replicas, batch_size=batch_size, **kw
        )
        start_s = time.perf_counter() - start
        pids = _replica_pids(inf.id)
        info = {"inference_id": inf.id, "batch_size": inf.batch_size}
        info["max_wait_ms"] = inf.max_wait_ms
        handle = serve.get_deployment_handle("Predictor", app_name=app_name(inf.id))

        def stop_fn() -> None:
            client.delete_inference(inf.id)

    else:
        # Logical CPUs per replica (`kafkaml_ray.serve.options`): the ingress's 0.25, and the
        # 0.5 a GPU predictor takes; the baseline actor gets both shares, echo the ingress's.
        actor = ray.remote(LoopWorker).options(
            num_cpus=INGRESS_CPUS + (PREDICTOR_CPUS if side == "baseline" else 0.0)
        )
        group = f"bench-{tag}"
        args = trained.model_args() if side == "baseline" else None
        actors = [
            actor.remote(
                side,
                settings.kafka_config(),
                inp,
                out,
                group,
                case.input_config,
                args,
                batch_size,
                flush_each,
            )
            for _ in range(replicas)
        ]
        ready = ray.get([a.ready.remote() for a in actors], timeout=300)
        start_s = time.perf_counter() - start
        errors = [r["error"] for r in ready if r["error"]]
        if errors:
            raise RuntimeError(f"{side} worker failed: {errors[0]}")
        pids = {side: [r["pid"] for r in ready]}
        info = {"torch_threads": ready[0]["torch_threads"], "batch_size": batch_size}
        if side == "baseline":
            info["flush_each_message"] = flush_each
        handle = actors

        def stop_fn() -> list:
            counts = ray.get([a.stop.remote() for a in actors], timeout=120)
            for a in actors:
                ray.kill(a)
            return counts

    fast = Producer(producer_config(settings.bootstrap_servers, {**settings.kafka, "linger.ms": 5}))
    return Pipeline(
        side,
        case.name,
        replicas,
        inp,
        out,
        collector,
        producer,
        start_s,
        pids,
        stop_fn,
        info,
        handle,
        fast=fast,
    )
