"""Inference: our Ray Serve application against Kafka-ML's inference loop and an echo ceiling.

One run, one embedded broker and Ray head, the same trained models and the same messages.
First the example PyTorch models are trained through the library (`Client` + `RawSink`, as
the inference tests do): the digits CNN (``digits-cnn-pytorch``, 8x8 float32 images) and
the regression MLP (``regression-mlp-pytorch``, 26 float32 features). Then, per model, three
pipelines, each on topics of its own (input and output with as many partitions as replicas;
the output topics keep the broker's append time as message timestamp):

- **ours**: ``Client.deploy_inference(result_id, input_topic, output_topic, replicas=R,
  batch_size=B)``: the Ray Serve application (Kafka ingress replicas, which predict
  themselves for a CPU inference), as a user deploys it, with its defaults otherwise;
- **baseline**: Kafka-ML's inference loop (its paper's Algorithm 2 and its PyTorch
  ``inference.py``): one consumer, ``poll(1.0)``, decode one message, predict that one
  sample, produce ``{"values": [...]}`` (input headers copied, no key) and ``flush()``,
  ``commit()`` every 16 messages; the same trained weights loaded with `TrainedModel`, in a
  Ray actor of its own (one per replica, one consumer group);
- **echo**: consume and produce the input back unchanged (headers kept, provenance headers
  added, offsets committed once acknowledged), no model, with the client settings of our
  ingress (``linger.ms=0``, up to B messages per take, commits at most every 0.5 s): the
  ceiling of a Python consume/produce loop on this broker.

The pipelines of a model are started together (idle ones only poll) and every measurement
round goes over them in turn, rotating the order, so that a change in the load of the
(shared) machine falls on all of them. For the digits CNN three diagnostic pipelines run
beside them: ours with the earlier defaults ``batch_size=64, max_wait_ms=5`` and the baseline
without its per-message ``flush()``.

All inputs are RAW messages made by `kafkaml_ray.ingest.InferenceProducer` in this process
(``linger.ms=0``), each stamped with its send time (``time.time_ns()``) in a header; one
collector consumer in this process reads the output topic. Measured per pipeline:

- **throughput**: produce N messages at full speed, time from the first send until the N-th
  output is consumed (the backlog drained); ``repeat`` rounds after a warm-up that also
  checks the predictions (accuracy / MAE; ours against the baseline's);
- **latency at fixed offered loads**: a paced producer at each rate of ``loads`` for
  ``load_s`` seconds, ``load_rounds`` times, the pipelines taking turns; latency = consume
  time (or the output's broker append time) minus the send stamp; p50/p99 over every message
  of the load's rounds;
- **requests against clients** (the paper's Tables 1-2 shape, digits CNN, ours and the
  baseline): C concurrent clients each send a 256-sample request (256 messages sharing a
  request id), wait for its 256 predictions, and repeat; average request latency per C, with
  replicas = partitions = R.

Our run is then profiled: the Predictor's Serve handle round trip against the model alone,
and py-spy samples of the ingress consume loop and the predictor during an extra backlog.

``--size small`` (default) cuts the grid to clients 1, 4, 16 and replicas 1, 2 and sizes
the rest to under ten minutes on 2 cores; ``--size full`` runs the paper's clients 1-32 and
replicas 1, 2, 4 with more messages; ``--size quick`` is a smoke run. ``--no-variants``
leaves out the diagnostic pipelines. Writes ``inference.json``, ``inference.md`` and
``inference.png`` to ``--out``.

    python -m benchmarks.inference [--size small|full|quick] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import (
    create_topic,
    digits,
    local_stack,
    machine_facts,
    produce_digits,
    regression,
    settle,
    summary,
    write_json,
)
from kafkaml_ray.serve.options import INGRESS_CPUS, PREDICTOR_CPUS
from kafkaml_ray.serve.spec import InferenceSpec
from kafkaml_ray.settings import Settings

__all__ = ["main", "run", "Plan", "SIZES", "LoopWorker", "Collector"]

SIDES = ("ours", "baseline", "echo")
LABELS = {
    "ours": "ours (Ray Serve app)",
    "baseline": "Kafka-ML loop",
    "echo": "echo (no model)",
}
COLORS = {"ours": "tab:blue", "baseline": "tab:gray", "echo": "tab:green"}
TS_HEADER, REQ_HEADER, IDX_HEADER = "bench-t", "bench-req", "bench-i"
LOG_APPEND = {"message.timestamp.type": "LogAppendTime"}
REQUEST = 256  # samples per request, as in the paper
COMMIT_EVERY = 16  # Kafka-ML's MAX_MESSAGES_TO_COMMIT
COMMIT_INTERVAL_S = InferenceSpec.commit_interval_s  # echo commits as our ingress does
AIM_VS_BASELINE, AIM_VS_ECHO = 10.0, 0.5
#: "No worse at light load", read with the measurement's resolution: the 95% interval of
#: p50(ours) - p50(baseline) must end below this share of the baseline's p50.
LIGHT_MARGIN = 0.05
LIGHT_AIM = f"light_load_p50_within_{LIGHT_MARGIN:.0%}_of_baseline_ci95"
#: Logical CPUs per replica (`kafkaml_ray.serve.options`): the ingress's 0.25, and the 0.5 a
#: GPU predictor takes; the baseline actor gets both shares, echo the ingress's.
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
        return (self.framework, self.code, self.imports, self.weights_uri, self.input_shape)


def train_models(settings: Settings, epochs: int) -> tuple[Any, dict[str, Trained]]:
    """Train every case's example model through the library, one after the other: one
    configuration and training deployment each, its data sent by `RawSink` to the control
    topic that the control listener (started as `kafkaml-ray up` starts it) reads. A run
    that fails (e.g. a Ray Train health check timing out on a busy machine) is redone once."""
    from kafkaml_ray import Client
    from kafkaml_ray.demo import register_examples
    from kafkaml_ray.ingest.listener import start_listener, stop_listener

    client = Client(settings)
    start_listener(settings)
    ids = register_examples(client, [c.example for c in MODELS.values()])
    out = {}
    for name, case in MODELS.items():
        config = client.create_configuration(f"bench-{name}", [ids[case.example]])
        x, y = case.base()
        for attempt in (1, 2):
            start = time.perf_counter()
            dep = client.deploy_training(
                config.id, batch_size=TRAIN_BATCH, kwargs=f"epochs={epochs}"
            )
            produce_digits(
                settings,
                f"train-{name}-{uuid.uuid4().hex[:6]}",
                x,
                y,
                1,
                deployment_id=dep.id,
                validation_rate=0.1,
                test_rate=0.1,
            )
            r = client.wait_for_deployment(dep.id, timeout=900).results[0]
            if r.status == "finished":
                break
            log(f"training {name} (attempt {attempt}): {r.status}: {r.error}")
        else:
            raise RuntimeError(f"training {name}: {r.status}: {r.error}")
        m = client.get_model(r.model_id)
        out[name] = Trained(
            r.id,
            m.framework,
            m.code,
            m.imports,
            r.weights_uri,
            m.input_shape,
            r.test_metrics,
            time.perf_counter() - start,
        )
    stop_listener(settings)
    return client, out


# -- the baseline and the echo pipeline: one Ray actor per replica -------------------------
class LoopWorker:
    """``mode="baseline"``: Kafka-ML's inference loop; ``mode="echo"``: our ingress's
    consume/produce loop without a model. Runs in a thread until `stop`."""

    def __init__(
        self,
        mode: str,
        kafka: dict[str, Any],
        input_topic: str,
        output_topic: str,
        group_id: str,
        input_config: dict[str, str],
        model_args: tuple | None = None,
        batch_size: int = 64,
        flush_each: bool = True,
    ):
        self.mode, self.kafka, self.group_id = mode, kafka, group_id
        self.input_topic, self.output_topic = input_topic, output_topic
        self.dtype = np.dtype(input_config.get("data_type", "float32"))
        self.shape = tuple(int(v) for v in str(input_config.get("data_reshape", "")).split())
        self.batch_size, self.flush_each = batch_size, flush_each
        self.model = None
        if model_args is not None:
            from kafkaml_ray._private.trained import TrainedModel

            self.model = TrainedModel(*model_args)
        self.counts = Counter()
        self.steps: Counter = Counter()  # seconds per step of the baseline loop
        self._stop = threading.Event()
        self._error: str | None = None
        target = self._baseline if mode == "baseline" else self._echo
        self._thread = threading.Thread(target=self._guard, args=(target,), daemon=True)
        self._thread.start()

    def _guard(self, target) -> None:
        try:
            target()
        except Exception as e:  # noqa: BLE001 - reported by stop()/ready()
            self._error = f"{type(e).__name__}: {e}"

    def ready(self) -> dict[str, Any]:
        threads = None
        if self.model is not None:
            import torch

            threads = torch.get_num_threads()
        return {"pid": os.getpid(), "torch_threads": threads, "error": self._error}

    def stop(self) -> dict[str, Any]:
        self._stop.set()
        self._thread.join(30)
        n = max(1, self.counts["predicted"])
        steps = {k: 1000 * v / n for k, v in self.steps.items()}
        return {**self.counts, "ms_per_message": steps, "error": self._error}

    def time_predict(self, n: int, reps: int) -> float:
        """Median seconds of ``model.predict`` on ``n`` samples, in this process."""
        x = np.zeros((n, *self.shape), dtype=self.dtype)
        self.model.predict(x)
        times = []
        for _ in range(reps):
            t = time.perf_counter()
            self.model.predict(x)
            times.append(time.perf_counter() - t)
        return statistics.median(times)

    # Kafka-ML's model_inference/pytorch/inference.py, message by message.
    def _baseline(self) -> None:
        from confluent_kafka import Consumer, Producer

        consumer = Consumer(
            {
                **self.kafka,
                "group.id": self.group_id,
                "auto.offset.reset": "earliest",
                "enable.auto.commit": False,
            }
        )
        consumer.subscribe([self.input_topic])
        producer = Producer(self.kafka)
        uncommitted = 0
        try:
            while not self._stop.is_set():
                msg = consumer.poll(1.0)
                if msg is None:
                    continue
                if msg.error():
                    self.counts["consumer_errors"] += 1
                    continue
                try:
                    t0 = time.perf_counter()  # (timing the steps is not Kafka-ML's)
                    x = np.frombuffer(msg.value(), dtype=self.dtype).reshape(self.shape)
                    pred = self.model.predict(x[None])[0]
                    value = json.dumps({"values": pred.tolist()}).encode()
                    t1 = time.perf_counter()
                    producer.produce(self.output_topic, value, headers=msg.headers())
                    if self.flush_each:
                        producer.flush()
                    else:
                        producer.poll(0)
                    t2 = time.perf_counter()
                    self.counts["predicted"] += 1
                    uncommitted += 1
                    if uncommitted >= COMMIT_EVERY:
                        consumer.commit()
                        uncommitted = 0
                    self.steps["decode_predict_encode"] += t1 - t0
                    self.steps["produce_flush" if self.flush_each else "produce"] += t2 - t1
                    self.steps["commit"] += time.perf_counter() - t2
                except Exception:  # noqa: BLE001 - Kafka-ML logs it and goes on
                    self.counts["errors"] += 1
        finally:
            producer.flush(30)
            consumer.close()

    # Our ingress's Kafka side (kafkaml_ray.serve.app.KafkaIngress) with no decode/predict.
    def _echo(self) -> None:
        from confluent_kafka import Consumer, Producer, TopicPartition

        from kafkaml_ray.ingest.sinks import producer_config

        base = {k: v for k, v in self.kafka.items() if k != "bootstrap.servers"}
        consumer = Consumer(
            {
                **self.kafka,
                "group.id": self.group_id,
                "enable.auto.commit": False,
                "auto.offset.reset": "earliest",
                "partition.assignment.strategy": "cooperative-sticky",
                "max.poll.interval.ms": 300000,
                "session.timeout.ms": 10000,
                "heartbeat.interval.ms": 2000,
            }
        )
        producer = Producer(
            producer_config(
                self.kafka["bootstrap.servers"],
                {**base, "linger.ms": 0},
            )
        )
        consumer.subscribe([self.input_topic])
        pending: list[list] = []  # [remaining, {(topic, partition): next offset}]
        acked: dict = {}
        last_commit = 0.0
        n = self.batch_size
        try:
            while not self._stop.is_set():
                msgs = consumer.consume(num_messages=n, timeout=0)
                if not msgs:
                    first = consumer.poll(0.1)
                    msgs = [] if first is None else [first, *consumer.consume(n - 1, timeout=0)]
                msgs = [m for m in msgs if m.error() is None]
                if msgs:
                    batch: list = [len(msgs), {}]
                    pending.append(batch)

                    def delivered(err, _m, batch=batch):
                        batch[0] -= 1

                    for m in msgs:
                        tp = (m.topic(), m.partition())
                        batch[1][tp] = max(batch[1].get(tp, 0), m.offset() + 1)
                        headers = list(m.headers() or []) + [
                            ("kafkaml-input-partition", str(m.partition()).encode()),
                            ("kafkaml-input-offset", str(m.offset()).encode()),
                        ]
                        while True:
                            try:
                                producer.produce(
                                    self.output_topic,
                                    m.value(),
                                    m.key(),
                                    headers=headers,
                                    on_delivery=delivered,
                                )
                                break
                            except BufferError:
                                producer.poll(0.05)
                    self.counts["predicted"] += len(msgs)
                producer.poll(0)
                while pending and pending[0][0] == 0:
                    acked.update(pending.pop(0)[1])
                if acked and time.monotonic() - last_commit >= COMMIT_INTERVAL_S:
                    consumer.commit(
                        offsets=[TopicPartition(t, p, o) for (t, p), o in acked.items()],
                        asynchronous=True,
                    )
                    acked, last_commit = {}, time.monotonic()
        finally:
            producer.flush(30)
            consumer.close()


# -- reading the output topic --------------------------------------------------------------
class Collector:
    """Reads a new output topic from its start in a thread of this process and records,
    per message in consume order: the send stamp (header), the consume time, the broker's
    timestamp; counts the outputs of each request id; keeps values when ``capture`` is on."""

    def __init__(self, settings: Settings, topic: str, partitions: int):
        from confluent_kafka import Consumer, TopicPartition

        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": f"bench-collector-{uuid.uuid4().hex[:8]}",
                    "enable.auto.commit": False,
                }
            )
        )
        # The topic is new (its leader may not be known yet): read it from the start.
        self.consumer.assign([TopicPartition(topic, p, 0) for p in range(partitions)])
        self.sent: list[int] = []
        self.recv: list[int] = []
        self.broker: list[int] = []
        self.captured: dict[int, bytes] = {}
        self.capture = False
        self.requests: dict[str, list] = {}  # id -> [left, Event, done_ns]
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def expect(self, request: str, n: int) -> list:
        entry = [n, threading.Event(), 0]
        with self._lock:
            self.requests[request] = entry
        return entry

    def _run(self) -> None:
        while not self._stop.is_set():
            # consume(n, timeout) waits for n messages or the timeout: take what is there,
            # else block in poll(), which returns with the first message.
            msgs = self.consumer.consume(num_messages=10_000, timeout=0)
            if not msgs:
                first = self.consumer.poll(0.05)
                if first is None:
                    continue
                msgs = [first, *self.consumer.consume(num_messages=10_000, timeout=0)]
            now = time.time_ns()
            for m in msgs:
                if m.error() is not None:
                    continue
                sent = req = idx = None
                for k, v in m.headers() or ():
                    if k == TS_HEADER:
                        sent = int(v)
                    elif k == REQ_HEADER:
                        req = v.decode()
                    elif k == IDX_HEADER:
                        idx = int(v)
                if sent is None:
                    continue
                if self.capture and idx is not None:
                    self.captured[idx] = m.value()
                if req is not None:
                    with self._lock:
                        entry = self.requests.get(req)
                    if entry is not None:
                        entry[0] -= 1
                        if entry[0] == 0:
                            entry[2] = now
                            entry[1].set()
                self.sent.append(sent)
                self.broker.append(m.timestamp()[1])
                self.recv.append(now)  # last: len(recv) counts complete records

    def mark(self) -> int:
        return len(self.recv)

    def wait(self, upto: int, timeout: float) -> bool:
        deadline = time.monotonic() + timeout
        while len(self.recv) < upto:
            if time.monotonic() > deadline:
                return False
            time.sleep(0.002)
        return True

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


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

        kw = {} if max_wait_ms is None else {"max_wait_ms": max_wait_ms}
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


# -- sending -------------------------------------------------------------------------------
def _send(p: Pipeline, x: np.ndarray, n: int, extra: Callable[[int], list] | None = None) -> None:
    """Send ``n`` samples (cycling through ``x``), each stamped with its send time."""
    for _ in range(n):
        i = p.sent
        p.sent += 1
        headers = [(TS_HEADER, str(time.time_ns()).encode())]
        if extra is not None:
            headers += extra(i)
        p.producer.send(x[i % len(x)], key=str(i).encode(), headers=headers)


def _percentiles(values_ms: np.ndarray) -> dict[str, float]:
    if not len(values_ms):
        return {}
    return {
        "p50_ms": float(np.percentile(values_ms, 50)),
        "p99_ms": float(np.percentile(values_ms, 99)),
        "mean_ms": float(values_ms.mean()),
        "max_ms": float(values_ms.max()),
    }


# -- measurements --------------------------------------------------------------------------
def warm_up(p: Pipeline, x: np.ndarray, n: int) -> dict[str, Any]:
    """Send ``n`` samples tagged with their index; wait for every output; return the
    predictions by index (``None`` for echo, which returns the inputs: checked here)."""
    c = p.collector
    mark, start = c.mark(), time.perf_counter()
    c.capture = True
    first = p.sent
    _send(p, x, n, lambda i: [(IDX_HEADER, str(i - first).encode())])
    if not c.wait(mark + n, timeout=300):
        raise TimeoutError(f"{p.side}/{p.model}: {c.mark() - mark} of {n} warm-up outputs")
    c.capture = False
    seconds = time.perf_counter() - start
    got = [c.captured[i] for i in range(n)]
    c.captured = {}
    idx = (first + np.arange(n)) % len(x)
    if p.side == "echo":
        if got != [np.asarray(x[i], dtype=np.float32).tobytes() for i in idx]:
            raise AssertionError("echo returned other bytes than were sent")
        return {"seconds": seconds, "predictions": None, "index": idx}
    preds = np.asarray([json.loads(v)["values"] for v in got], dtype=np.float64)
    return {"seconds": seconds, "predictions": preds, "index": idx}


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def _busy_snapshot() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def _produce_backlog(p: Pipeline, x: np.ndarray, n: int, stamp: int) -> None:
    """``n`` messages as fast as Python can queue them: values encoded once by the
    `InferenceProducer`'s format, one send stamp for all, a plain producer (the library's
    `producer_config`, ``linger.ms=5``): far faster than ours or the baseline, so their
    backlog is there before they have drained much of it (echo keeps up with it)."""
    if len(p.encoded) != len(x):
        p.encoded = [p.producer.format.encode(v)[0] for v in x]
    headers = [(TS_HEADER, str(stamp).encode())]
    produce, topic, values = p.fast.produce, p.input_topic, p.encoded
    for _ in range(n):
        i = p.sent
        p.sent += 1
        while True:
            try:
                produce(topic, values[i % len(values)], str(i).encode(), headers=headers)
                break
            except BufferError:
                p.fast.poll(0.01)
    p.fast.poll(0)


def throughput(p: Pipeline, x: np.ndarray, n: int) -> dict[str, Any]:
    """Produce a backlog of ``n`` messages; seconds from the first send to the n-th output."""
    c = p.collector
    pids = [pid for v in p.pids.values() for pid in v]
    cpu0, busy0 = _cpu_seconds(pids), _busy_snapshot()
    driver0 = time.process_time()
    mark = c.mark()
    t0 = time.time_ns()
    _produce_backlog(p, x, n, t0)
    produce_s = (time.time_ns() - t0) / 1e9
    if not c.wait(mark + n, timeout=max(120.0, n / 50)):
        raise TimeoutError(f"{p.side}/{p.model}: {c.mark() - mark} of {n} outputs")
    seconds = (c.recv[mark + n - 1] - t0) / 1e9
    cpu1, busy1 = _cpu_seconds(pids), _busy_snapshot()
    wall = (time.time_ns() - t0) / 1e9
    return {
        "messages": n,
        "seconds": seconds,
        "msgs_per_s": n / seconds,
        "produce_s": produce_s,
        "pipeline_cores": (cpu1 - cpu0) / wall,
        "driver_cores": (time.process_time() - driver0) / wall,
        "machine_busy": 1 - (busy1[1] - busy0[1]) / max(1, busy1[0] - busy0[0]),
    }


def at_load(p: Pipeline, x: np.ndarray, rate: float, seconds: float) -> dict[str, Any]:
    """Send at ``rate`` messages/s for ``seconds``; latency of every message."""
    c = p.collector
    n = max(1, int(rate * seconds))
    mark = c.mark()
    t0 = time.perf_counter()
    sent = 0
    while sent < n:
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        if due > sent:
            _send(p, x, due - sent)
            sent = due
        else:
            time.sleep(max(0.0, min(0.002, sent / rate - (time.perf_counter() - t0))))
    offered_s = time.perf_counter() - t0
    drained = c.wait(mark + n, timeout=max(120.0, n / 50))
    end = c.mark()
    sent_ns = np.asarray(c.sent[mark:end], dtype=np.int64)
    recv_ns = np.asarray(c.recv[mark:end], dtype=np.int64)
    broker_ms = np.asarray(c.broker[mark:end], dtype=np.float64)
    e2e = (recv_ns - sent_ns) / 1e6
    broker = broker_ms - sent_ns / 1e6
    span = (recv_ns.max() - sent_ns.min()) / 1e9 if len(recv_ns) else float("nan")
    return {
        "offered_msgs_per_s": rate,
        "sent": n,
        "received": int(end - mark),
        "drained": drained,
        "send_s": offered_s,
        "delivered_msgs_per_s": (end - mark) / span if span else float("nan"),
        **_percentiles(e2e),
        "broker": _percentiles(broker),
        "_e2e_ms": e2e,
        "_broker_ms": broker,
    }


def pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one load taken as one: percentiles over all their messages, the
    per-round p50s beside them."""
    e2e = np.concatenate([r.pop("_e2e_ms") for r in rounds])
    broker = np.concatenate([r.pop("_broker_ms") for r in rounds])
    return {
        "offered_msgs_per_s": rounds[0]["offered_msgs_per_s"],
        "sent": sum(r["sent"] for r in rounds),
        "received": sum(r["received"] for r in rounds),
        "drained": all(r["drained"] for r in rounds),
        "delivered_msgs_per_s": float(np.median([r["delivered_msgs_per_s"] for r in rounds])),
        **_percentiles(e2e),
        "broker": _percentiles(broker),
        "round_p50_ms": [r.get("p50_ms") for r in rounds],
    }


def p50_difference(
    ours: list[dict[str, Any]], base: list[dict[str, Any]], n: int = 2000, seed: int = 0
) -> dict[str, float]:
    """p50(ours) - p50(baseline), ms, over the messages of all rounds, with a 95% interval
    from a two-level bootstrap: the round pairs (measured back to back) drawn again, then the
    messages within each drawn round, so that both the drift of the machine between rounds
    and the spread within a round count."""
    rng = np.random.default_rng(seed)
    a, b = [r["_e2e_ms"] for r in ours], [r["_e2e_ms"] for r in base]
    k = min(len(a), len(b))
    diffs = np.empty(n)
    for i in range(n):
        pick = rng.integers(0, k, k)
        da = np.concatenate([rng.choice(a[j], len(a[j])) for j in pick])
        db = np.concatenate([rng.choice(b[j], len(b[j])) for j in pick])
        diffs[i] = np.median(da) - np.median(db)
    low, high = np.percentile(diffs, [2.5, 97.5])
    point = np.median(np.concatenate(a)) - np.median(np.concatenate(b))
    return {"ms": float(point), "ci95_low_ms": float(low), "ci95_high_ms": float(high)}


def request_grid(p: Pipeline, x: np.ndarray, clients: int, requests: int) -> dict[str, Any]:
    """``clients`` threads, each sending ``requests`` 256-sample requests one after the other
    and waiting for all 256 predictions of each; latency per request."""
    c = p.collector
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(k: int) -> None:
        for j in range(requests):
            req = f"{k}.{j}.{uuid.uuid4().hex[:8]}"
            entry = c.expect(req, REQUEST)
            t0 = time.time_ns()
            with lock:
                _send(p, x, REQUEST, lambda _i, req=req: [(REQ_HEADER, req.encode())])
            if not entry[1].wait(600):
                errors.append(f"request {req}: {entry[0]} predictions missing")
                return
            with lock:
                latencies.append((entry[2] - t0) / 1e6)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise TimeoutError(f"{p.side}: {errors[0]}")
    lat = np.asarray(latencies)
    return {
        "clients": clients,
        "requests": len(lat),
        "avg_ms": float(lat.mean()),
        "p50_ms": float(np.percentile(lat, 50)),
        "max_ms": float(lat.max()),
        "msgs_per_s": clients * requests * REQUEST / wall,
    }


# -- profiling ours ------------------------------------------------------------------------
def _pyspy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else None


def _collapsed(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append(([_frame(f) for f in stack.split(";")], int(count)))
    return out


def _frame(frame: str) -> str:
    """``"func (path/file.py:12)"`` -> ``"func (file.py)"``."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1].rstrip(')')})"


def _is(frame: str, name: str) -> bool:
    """``"KafkaIngress._run (app.py)"`` is ``"_run (app.py)"``."""
    return frame == name or frame.endswith("." + name)


def _below(stacks: list[tuple[list[str], int]], anchor: str) -> dict[str, float]:
    """Share of the samples through ``anchor`` by the function called right below it
    (``(self)`` when the sample is in ``anchor`` itself)."""
    shares: Counter = Counter()
    for frames, count in stacks:
        hits = [i for i, f in enumerate(frames) if _is(f, anchor)]
        if hits:
            i = hits[-1]
            shares[frames[i + 1] if i + 1 < len(frames) else "(self)"] += count
    total = sum(shares.values())
    return {k: v / total for k, v in shares.most_common(8)} if total else {}


def _leaves(stacks: list[tuple[list[str], int]]) -> dict[str, float]:
    """Share of the samples by the innermost Python function (time in C/C++ code, e.g. Ray's
    core worker, shows under the Python function that called it)."""
    shares: Counter = Counter()
    for frames, count in stacks:
        shares[frames[-1]] += count
    total = sum(shares.values())
    return {k: v / total for k, v in shares.most_common(10)} if total else {}


def profile_ours(p: Pipeline, x: np.ndarray, rate_hint: float, seconds: float) -> dict[str, Any]:
    """Serve handle round trips to the Predictor (1 and B samples), then py-spy on the
    ingress (every thread, idle included: wall time of its consume loop) and the predictor
    (CPU samples) while an extra backlog drains."""
    out: dict[str, Any] = {}
    b = p.info["batch_size"]
    for n in (1, b):
        chunk = np.asarray(x[:n], dtype=np.float32)
        p.handle.predict.remote(chunk).result()
        times = []
        for _ in range(30):
            t = time.perf_counter()
            p.handle.predict.remote(chunk).result()
            times.append(time.perf_counter() - t)
        out[f"handle_round_trip_ms_{n}"] = 1000 * statistics.median(times)
    exe = _pyspy()
    if exe is None or not p.pids.get("KafkaIngress") or not p.pids.get("Predictor"):
        out["pyspy"] = "py-spy or the replica processes not found"
        return out
    tmp = Path(tempfile.mkdtemp(prefix="kmlb-spy-"))
    procs = {}
    for role, idle in (("KafkaIngress", True), ("Predictor", False)):
        cmd = [exe, "record", "--pid", str(p.pids[role][0]), "--duration", str(int(seconds))]
        cmd += ["--rate", "200", "--format", "raw", "--nonblocking", "-o", str(tmp / role)]
        cmd += ["--idle"] if idle else []
        procs[role] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # py-spy attached
    n = int(rate_hint * (seconds + 1))
    measured = throughput(p, x, n)
    for proc in procs.values():
        proc.wait(60)
    out["profiled_round"] = measured
    try:
        ingress = _collapsed(tmp / "KafkaIngress")
        predictor = _collapsed(tmp / "Predictor")
    except OSError as e:
        out["pyspy"] = f"no py-spy output: {e}"
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["ingress_loop_wall_share"] = _below(ingress, "_step (app.py)")
    out["ingress_submit_wall_share"] = _below(ingress, "_submit (app.py)")
    out["ingress_finish_wall_share"] = _below(ingress, "_finish (app.py)")
    cpu = sum(c for _, c in predictor)
    in_model = sum(c for f, c in predictor if any(_is(x, "predict (trained.py)") for x in f))
    out["predictor_cpu_samples"] = cpu
    # Under 0.2 s of CPU the Predictor only ran Serve's housekeeping: it was not predicting.
    out["predictor_cpu_share_in_model"] = in_model / cpu if cpu >= 0.2 * 200 else None
    out["predictor_cpu_leaves"] = _leaves(predictor)
    out["pyspy_rate_hz"] = 200
    return out


# -- the run -------------------------------------------------------------------------------
#: Diagnostic pipelines (digits CNN, 1 replica) measured beside the three main ones, each
#: changing one setting: (key, side, options of `start_pipeline`, light load measured too).
VARIANTS = (
    ("ours_batch_64", "ours", {"batch_size": 64, "max_wait_ms": 5.0}, True),
    ("baseline_no_flush", "baseline", {"flush_each": False}, True),
)


def _rotated(keys: list[str], i: int) -> list[str]:
    """``keys`` starting at position ``i`` (so every pipeline takes every turn)."""
    i %= len(keys)
    return keys[i:] + keys[:i]


def _check(case: ModelCase, wu: dict[str, Any], y: np.ndarray) -> dict[str, Any]:
    if wu["predictions"] is None:
        return {}
    preds, truth = wu["predictions"], y[wu["index"]]
    if case.classifier:
        out = {"warmup_accuracy": float((preds.argmax(1) == truth).mean())}
    else:
        out = {"warmup_mae": float(np.abs(preds[:, 0] - truth).mean())}
    return {**out, "_predictions": preds}


def _idle_cores(pipes: dict[str, Pipeline], seconds: float = 3.0) -> float:
    """CPU the started pipelines use while nothing is sent (polling, stats, health checks)."""
    pids = [pid for p in pipes.values() for v in p.pids.values() for pid in v]
    before = _cpu_seconds(pids)
    time.sleep(seconds)
    return (_cpu_seconds(pids) - before) / seconds


def measure_model(
    settings: Settings,
    client: Any,
    case: ModelCase,
    trained: Trained,
    plan: Plan,
    variants: bool,
    grid: dict[str, dict[str, Any]],
) -> dict[str, Any]:
    """Start ours, the baseline and echo (and, for the headline model, the variants) at
    once, each on its own topics, then take every measurement round in turn over them,
    rotating the order, so that a change in the machine's load falls on every pipeline."""
    import ray

    x, y = case.data(max(plan.warmup, 4096))
    specs = [(s, s, {}, True) for s in SIDES]
    if case.name == HEADLINE and variants:
        specs += list(VARIANTS)
    pipes: dict[str, Pipeline] = {}
    res: dict[str, dict[str, Any]] = {}
    try:
        for key, side, options, _ in specs:
            settle(max_s=5)
            opts = {"batch_size": plan.batch_size, **options}
            pipes[key] = start_pipeline(side, settings, client, case, trained, 1, **opts)
            wu = warm_up(pipes[key], x, plan.warmup)
            res[key] = {
                "side": side,
                "settings": options,
                "start_s": pipes[key].start_s,
                "warmup_s": wu["seconds"],
                "pids": pipes[key].pids,
                **pipes[key].info,
                **_check(case, wu, y),
                "rounds": [],
                "loads": {},
            }
            log(f"{case.name}/{key}: started in {pipes[key].start_s:.1f}s")
        keys = list(pipes)
        settle(max_s=5)
        idle = _idle_cores(pipes)
        sizes = {}
        for key in keys:  # untimed: sizes each pipeline's rounds to about round_s seconds
            first = throughput(pipes[key], x, plan.backlog)
            rate = first["msgs_per_s"] * plan.round_s
            sizes[key] = int(min(max(rate, plan.backlog), 40 * plan.backlog))
            res[key]["sizing_round"] = first
        for i in range(plan.repeat):
            for key in _rotated(keys, i):
                res[key]["rounds"].append(throughput(pipes[key], x, sizes[key]))
        for key in keys:
            rates = summary([r["msgs_per_s"] for r in res[key]["rounds"]])
            res[key]["msgs_per_s"], res[key]["msgs_per_s_summary"] = rates["median"], rates
            log(f"{case.name}/{key}: {rates['median']:,.0f} msgs/s")
        for j, rate in enumerate(plan.loads):
            order = [k for k, _, _, light in specs if k in SIDES or (j == 0 and light)]
            rounds: dict[str, list] = defaultdict(list)
            # The light load, where the aim is a tie-break of tenths of a millisecond, gets
            # twice the rounds.
            for k in range(plan.load_rounds * (2 if j == 0 else 1)):
                for key in _rotated(order, j + k):  # interleaved: load changes hit every side
                    rounds[key].append(at_load(pipes[key], x, rate, plan.load_s))
            diff = p50_difference(rounds["ours"], rounds["baseline"])  # (before pooled())
            for key, got in rounds.items():
                res[key]["loads"][str(rate)] = pooled(got)
            res["ours"]["loads"][str(rate)]["p50_diff_vs_baseline"] = diff
        if case.name == HEADLINE:
            for j, c in enumerate(plan.clients):
                for side in _rotated(["ours", "baseline"], j):
                    grid[side][f"1x{c}"] = request_grid(pipes[side], x, c, plan.requests)
                    log(f"{side} r=1 c={c}: {grid[side][f'1x{c}']['avg_ms']:.0f} ms")
            res["ours"]["profile"] = profile_ours(
                pipes["ours"], x, res["ours"]["msgs_per_s"], plan.profile_s
            )
        worker = pipes["baseline"].handle[0]
        res["baseline"]["model_predict_ms"] = {
            str(n): 1000 * ray.get(worker.time_predict.remote(n, 50)) for n in (1, plan.batch_size)
        }
    finally:
        for key, p in pipes.items():
            res.setdefault(key, {})["stopped"] = p.stop()
    sides = {s: res.pop(s) for s in SIDES}
    return {"sides": sides, "variants": res, "idle_cores_all_pipelines": idle}


def request_grid_at(
    settings: Settings, client: Any, trained: Trained, plan: Plan, replicas: int, grid: dict
) -> None:
    """The grid's cells at ``replicas`` = partitions (> 1): ours and the baseline started
    together, taking turns."""
    case = MODELS[HEADLINE]
    x, _ = case.data(4096)
    pipes = {}
    try:
        for side in ("ours", "baseline"):
            settle(max_s=5)
            pipes[side] = start_pipeline(
                side, settings, client, case, trained, replicas, plan.batch_size
            )
            warm_up(pipes[side], x, plan.warmup)
        for j, c in enumerate(plan.clients):
            for side in _rotated(["ours", "baseline"], j):
                grid[side][f"{replicas}x{c}"] = request_grid(pipes[side], x, c, plan.requests)
                log(f"{side} r={replicas} c={c}: {grid[side][f'{replicas}x{c}']['avg_ms']:.0f} ms")
    finally:
        for p in pipes.values():
            p.stop()


def run(plan: Plan, variants: bool = True) -> dict[str, Any]:
    facts = machine_facts()
    started = time.perf_counter()
    per: dict[str, dict[str, Any]] = {}
    grid: dict[str, dict[str, dict[str, Any]]] = {"ours": {}, "baseline": {}}
    with local_stack(num_cpus=8) as settings:
        import ray

        facts["ray_gpus"] = ray.cluster_resources().get("GPU", 0)
        startup_s = time.perf_counter() - started
        client, trained = train_models(settings, plan.epochs)
        log(f"trained: { {k: v.test_metrics for k, v in trained.items()} }")
        for name, case in MODELS.items():
            per[name] = measure_model(settings, client, case, trained[name], plan, variants, grid)
        for r in plan.replicas[1:]:
            request_grid_at(settings, client, trained[HEADLINE], plan, r, grid)
    facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return _results(plan, per, grid, trained, startup_s, facts, time.perf_counter() - started)


def log(text: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {text}", flush=True)


def _results(plan, per, grid, trained, startup_s, facts, total_s) -> dict[str, Any]:
    head = per[HEADLINE]["sides"]
    extra = per[HEADLINE]["variants"]
    agree = {}
    for name, m in per.items():
        for d in m["variants"].values():
            d.pop("_predictions", None)
        sides = m["sides"]
        a, b = sides["ours"].pop("_predictions", None), sides["baseline"].pop("_predictions", None)
        if a is not None and b is not None:
            agree[name] = float(np.abs(a - b).max())
    light = str(plan.loads[0])
    ours_light, base_light = head["ours"]["loads"][light], head["baseline"]["loads"][light]
    ours, base, echo = (head[s]["msgs_per_s"] for s in SIDES)
    models = {}
    for name, m in per.items():
        sides = m["sides"]
        o, b, e = (sides[s]["msgs_per_s"] for s in SIDES)
        models[name] = {
            "ours_msgs_per_s": o,
            "baseline_msgs_per_s": b,
            "echo_msgs_per_s": e,
            "ratio_vs_baseline": o / b,
            "ratio_vs_echo": o / e,
            "test_metrics": trained[name].test_metrics,
            "idle_cores_all_pipelines": m["idle_cores_all_pipelines"],
            "sides": sides,
        }
    aims = {
        f"ratio_vs_baseline_at_least_{AIM_VS_BASELINE:g}": ours / base >= AIM_VS_BASELINE,
        f"ratio_vs_echo_at_least_{AIM_VS_ECHO:g}": ours / echo >= AIM_VS_ECHO,
        "light_load_p50_no_worse_than_baseline": ours_light["p50_ms"] <= base_light["p50_ms"],
        "light_load_p99_no_worse_than_baseline": ours_light["p99_ms"] <= base_light["p99_ms"],
    }
    diff = ours_light.get("p50_diff_vs_baseline")
    if diff:  # what the rounds can tell apart: at most LIGHT_MARGIN worse, at 95%
        aims[LIGHT_AIM] = diff["ci95_high_ms"] <= LIGHT_MARGIN * base_light["p50_ms"]
    cut = plan.clients != PAPER_CLIENTS or plan.replicas != PAPER_REPLICAS
    return {
        "benchmark": "inference",
        "size": plan.size,
        "plan": asdict(plan),
        "ours_msgs_per_s": ours,
        "baseline_msgs_per_s": base,
        "echo_msgs_per_s": echo,
        "ratio_vs_baseline": ours / base,
        "ratio_vs_echo": ours / echo,
        "p50_ms": ours_light["p50_ms"],
        "p99_ms": ours_light["p99_ms"],
        "latency_load_msgs_per_s": plan.loads[0],
        "baseline_p50_ms": base_light["p50_ms"],
        "p50_diff_vs_baseline": diff,
        "baseline_p99_ms": base_light["p99_ms"],
        "echo_p50_ms": head["echo"]["loads"][light]["p50_ms"],
        "echo_p99_ms": head["echo"]["loads"][light]["p99_ms"],
        "headline": f"{HEADLINE}, 1 replica, 1 partition; p50/p99 at {plan.loads[0]} msgs/s",
        "aims": aims,
        "models": models,
        "predictions_max_abs_diff_ours_vs_baseline": agree,
        "grid": {
            "what": f"average latency of a {REQUEST}-sample request against concurrent clients, "
            "replicas = partitions",
            "clients": list(plan.clients),
            "replicas": list(plan.replicas),
            "requests_per_client": plan.requests,
            "cut": (
                f"--size {plan.size}: clients {list(plan.clients)} and replicas "
                f"{list(plan.replicas)} only (the paper: clients {list(PAPER_CLIENTS)}, "
                f"replicas {list(PAPER_REPLICAS)}); --size full runs those"
                if cut
                else None
            ),
            "cells": grid,
        },
        "variants": extra,
        "training": {
            k: {"result_id": v.result_id, "test_metrics": v.test_metrics, "wall_s": v.wall_s}
            for k, v in trained.items()
        },
        "startup_s": startup_s,
        "total_s": total_s,
        "timed": {
            "throughput": "N messages produced at full speed by InferenceProducer (linger.ms=0), "
            "timed from the first send to the N-th output consumed by the collector",
            "latency": "consume time (collector, this process) minus the send stamp in a "
            "header; 'broker' uses the output's LogAppendTime instead",
            "grid": "from a client's first send of its 256 messages to its 256th prediction "
            "consumed",
        },
        "machine": {**facts, "gpu": "none: CPU only" if not facts.get("ray_gpus") else "yes"},
    }


# -- reporting -----------------------------------------------------------------------------
def _f(v: float | None, digits_: int = 0) -> str:
    return "-" if v is None or v != v else f"{v:,.{digits_}f}"


DIFF_HEAD = "p50 ours - baseline, ms (95% interval)"


def _interval(d: dict[str, float] | None) -> str:
    return f"{d['ms']:+,.2f} ({d['ci95_low_ms']:+,.2f} to {d['ci95_high_ms']:+,.2f})" if d else "-"


def markdown(r: dict[str, Any]) -> str:
    plan = r["plan"]
    rows = []
    for name, m in r["models"].items():
        for side in SIDES:
            s = m["sides"][side]["msgs_per_s_summary"]
            cores = statistics.median(x["pipeline_cores"] for x in m["sides"][side]["rounds"])
            ratio = (
                f"{m['ratio_vs_baseline']:.1f}x baseline, {m['ratio_vs_echo']:.2f}x echo"
                if side == "ours"
                else ""
            )
            n = m["sides"][side]["rounds"][0]["messages"]
            rows.append(
                f"| {name} | {LABELS[side]} | {n:,} | **{_f(s['median'])}** ({_f(s['min'])}-"
                f"{_f(s['max'])}) | {cores:.2f} | {ratio} |"
            )
    head = r["models"][HEADLINE]["sides"]
    light_rounds = "; ".join(
        f"{side} "
        + " / ".join(
            _f(v, 1) for v in head[side]["loads"][str(plan["loads"][0])].get("round_p50_ms", [])
        )
        for side in SIDES
    )
    lat = []
    for name, m in r["models"].items():
        for load in plan["loads"]:
            cells = []
            for side in SIDES:
                d = m["sides"][side]["loads"][str(load)]
                note = "" if d["drained"] else " (not drained)"
                cells.append(
                    f"{_f(d.get('p50_ms'), 1)} / {_f(d.get('p99_ms'), 1)} "
                    f"({_f(d['broker'].get('p50_ms'), 0)}){note}"
                )
            ours = m["sides"]["ours"]["loads"][str(load)]
            d = ours.get("p50_diff_vs_baseline")
            cells.append(_interval(d))
            lat.append(
                f"| {name} | {load} | {_f(ours['delivered_msgs_per_s'])} | "
                + " | ".join(cells)
                + " |"
            )
    g = r["grid"]
    header = " | ".join(
        f"{LABELS[s].split(' (')[0]} R={k}" for k in g["replicas"] for s in ("ours", "baseline")
    )
    grid_rows = []
    for c in g["clients"]:
        cells = []
        for k in g["replicas"]:
            for side in ("ours", "baseline"):
                d = g["cells"].get(side, {}).get(f"{k}x{c}")
                cells.append(_f(d["avg_ms"]) if d else "-")
        grid_rows.append(f"| {c} | " + " | ".join(cells) + " |")
    aims = r["aims"]
    light_ci = ""
    if d := r.get("p50_diff_vs_baseline"):
        light_ci = (
            f" The p50 difference ours - baseline is {d['ms']:+.3f} ms, 95% interval "
            f"{d['ci95_low_ms']:+.3f} to {d['ci95_high_ms']:+.3f} ms; at most "
            f"{LIGHT_MARGIN:.0%} ({LIGHT_MARGIN * r['baseline_p50_ms']:.2f} ms) worse at 95%: "
            f"**{'met' if aims[LIGHT_AIM] else 'not met'}**."
        )
    prof = r["models"][HEADLINE]["sides"]["ours"].get("profile", {})
    pm = r["models"][HEADLINE]["sides"]["baseline"].get("model_predict_ms", {})
    v = r["variants"]
    m = r["machine"]
    grid_note = g["cut"] or "the paper's full grid"
    variant_lines = ""
    if v:
        head = r["models"][HEADLINE]["sides"]
        light = str(plan["loads"][0])

        def row(label: str, d: dict, base: dict, lat: dict | None) -> str:
            ratio = d["msgs_per_s"] / base["msgs_per_s"]
            lat_text = f"{_f(lat['p50_ms'], 1)} / {_f(lat['p99_ms'], 1)}" if lat else "-"
            return f"| {label} | {_f(d['msgs_per_s'])} | {ratio:.2f} | {lat_text} |"

        o, b = head["ours"], head["baseline"]
        rows_v = [
            row(
                f"ours, defaults (batch_size {o['batch_size']}, max_wait_ms {o['max_wait_ms']:g})",
                o,
                o,
                o["loads"][light],
            )
        ]
        for name, side, options, _ in VARIANTS:
            d = v.get(name)
            if d is None:
                continue
            label = f"{side}, " + ", ".join(f"{k}={val}" for k, val in options.items())
            base = o if side == "ours" else b
            rows_v.append(row(label, d, base, d["loads"].get(light)))
            if name == "ours_batch_64":
                rows_v.append(
                    row("baseline, as Kafka-ML (flush after each)", b, b, b["loads"][light])
                )
        variant_lines = (
            f"\n| digits CNN, 1 replica | msgs/s | vs its default | p50 / p99 ms at {light} "
            "msgs/s |\n|---|---:|---:|---|\n" + "\n".join(rows_v) + "\n\n"
        )
    profile_lines = ""
    if prof:
        loop = ", ".join(f"{k} {v:.0%}" for k, v in prof.get("ingress_loop_wall_share", {}).items())
        sub, fin = (
            ", ".join(f"{k} {v:.0%}" for k, v in prof.get(f"ingress_{f}_wall_share", {}).items())
            or "-"
            for f in ("submit", "finish")
        )
        model_share = prof.get("predictor_cpu_share_in_model")
        predictor = (
            f"Predictor CPU in `TrainedModel.predict`: {_f(100 * model_share)}%"
            if model_share is not None
            else "the Predictor deployment was idle (a CPU inference predicts in the ingress)"
        )
        batch_key = f"handle_round_trip_ms_{plan['batch_size']}"
        profile_lines = (
            f"- Predictor handle round trip from this process (the GPU and HTTP path): "
            f"{_f(prof.get('handle_round_trip_ms_1'), 1)} ms for 1 sample, "
            f"{_f(prof.get(batch_key), 1)} ms for "
            f"{plan['batch_size']}; the model alone (baseline process): "
            f"{_f(pm.get('1'), 2)} ms / {_f(pm.get(str(plan['batch_size'])), 2)} ms.\n"
            f"- py-spy, ingress consume loop (wall time, during a backlog): {loop or '-'}; "
            f"inside `_submit`: {sub}; inside `_finish`: {fin}. {predictor}.\n"
        )

    def steps(d: dict) -> str:
        per = (d.get("stopped") or [{}])[0].get("ms_per_message", {})
        return ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in per.items()) or "-"

    head = r["models"][HEADLINE]["sides"]
    profile_lines += (
        f"- The baseline's loop, busy time per message (ms, all its messages): "
        f"{steps(head['baseline'])}"
    )
    if "baseline_no_flush" in v:
        profile_lines += f"; without the flush: {steps(v['baseline_no_flush'])}"
    profile_lines += ".\n"
    agree = ", ".join(
        f"{k} {v:.1e}" for k, v in r["predictions_max_abs_diff_ours_vs_baseline"].items()
    )
    acc = r["models"][HEADLINE]["sides"]["ours"].get("warmup_accuracy")
    echo_rounds = [x for m in r["models"].values() for x in m["sides"]["echo"]["rounds"]]
    share = statistics.median(x["produce_s"] / x["seconds"] for x in echo_rounds)
    bound = (
        f"Echo's rounds spend {share:.0%} of their time (median) still producing the backlog: "
        "this process (producing, and reading the outputs in the same interpreter) is what "
        "limits them, so echo's figures are a lower bound of the ceiling and `ratio_vs_echo` "
        "an upper bound."
        if share > 0.3
        else f"Producing the backlog took {share:.0%} of an echo round (median)."
    )
    return f"""# Inference: ours (Ray Serve) vs Kafka-ML's loop vs an echo ceiling

`--size {r["size"]}`. Same embedded broker, same trained PyTorch models (digits CNN, \
regression MLP; {plan["epochs"]} epochs), same RAW messages; one replica and one partition \
unless said; ours with `batch_size={plan["batch_size"]}` and its other defaults. \
Machine: {m["cores"]} cores ({m["cpu"]}), {m["gpu"]}, shared with other jobs.

## Throughput: a backlog drained, 1 replica, 1 partition

| model | pipeline | msgs per round | msgs/s, median (min-max) | cores used | ours vs |
|---|---|---:|---:|---:|---|
{chr(10).join(rows)}

- `ratio_vs_baseline` **{r["ratio_vs_baseline"]:.1f}** (aim >= {AIM_VS_BASELINE:g}: \
**{"met" if aims[f"ratio_vs_baseline_at_least_{AIM_VS_BASELINE:g}"] else "not met"}**), \
`ratio_vs_echo` **{r["ratio_vs_echo"]:.2f}** (aim >= {AIM_VS_ECHO:g}: \
**{"met" if aims[f"ratio_vs_echo_at_least_{AIM_VS_ECHO:g}"] else "not met"}**); digits CNN.
- Each round produces a backlog at full speed (a plain producer, values encoded by \
`InferenceProducer`'s RAW format, far faster than ours or the baseline) and times from the first \
send to the last output consumed; {plan["repeat"]} rounds per pipeline, sized by an untimed \
first round to about {plan["round_s"]:g} s (at least {plan["backlog"]:,} messages), taken \
in turn over all pipelines of a model, rotating the order.
- {bound}
- "cores used": CPU seconds of the pipeline's own processes (ours: ingress + predictor \
replicas; the others: their actor) per second of the round. The broker and this process \
(producer, collector) use the rest of the machine.
- Predictions checked on the warm-up messages: digits accuracy {_f(acc and 100 * acc, 1)}% \
(ours); ours vs baseline max abs difference: {agree}.

## Latency at fixed offered loads: p50 / p99 ms (broker p50)

| model | offered msgs/s | ours delivered msgs/s | ours | baseline | echo | {DIFF_HEAD} |
|---|---:|---:|---|---|---|---|
{chr(10).join(lat)}

- {plan["load_rounds"]} rounds of {plan["load_s"]:g} s per load ({2 * plan["load_rounds"]} at the \
light load), the pipelines taking turns (so that a change in the machine's load falls on all \
of them), percentiles over the messages of all rounds; the p50 difference's interval comes \
from a two-level bootstrap (round pairs, then messages within them); paced producer; \
latency = consume time in the benchmark process minus the send time stamped in a header; \
(broker) = the output's LogAppendTime minus the send time (ms resolution). "not drained": \
outputs still missing after the wait. p50 of each round at the light load, digits CNN: \
{light_rounds}.
- Light load ({plan["loads"][0]} msgs/s), digits CNN: ours p50/p99 {r["p50_ms"]:.1f} / \
{r["p99_ms"]:.1f} ms, baseline {r["baseline_p50_ms"]:.1f} / {r["baseline_p99_ms"]:.1f} ms, \
echo {r["echo_p50_ms"]:.1f} / {r["echo_p99_ms"]:.1f} ms. Aim no worse than the baseline: \
p50 **{"met" if aims["light_load_p50_no_worse_than_baseline"] else "not met"}** as two \
numbers, p99 **{"met" if aims["light_load_p99_no_worse_than_baseline"] else "not met"}**.{light_ci}

## Requests against clients (the paper's Tables 1-2 shape): average ms per 256-sample request

| clients | {header} |
|---:|{"---:|" * (2 * len(g["replicas"]))}
{chr(10).join(grid_rows)}

- Digits CNN; R = replicas = partitions; each client sends {g["requests_per_client"]} \
requests one after the other (256 messages with one request id, then waits for their 256 \
predictions). Grid: {grid_note}.

## Where the time goes

{profile_lines}{variant_lines}
See `benchmarks/README.md` ("Inference: what the numbers say") for the reading.

## Noise

1-minute load {m["load_average_1m_at_start"]} at start, {m["load_average_1m_at_end"]} at \
end; cluster start {r["startup_s"]:.0f} s, whole run {r["total_s"] / 60:.1f} min. Python \
{m["python"]}, ray {m["versions"]["ray"]}, confluent-kafka {m["versions"]["confluent-kafka"]}, \
torch {m["versions"]["torch"]}.

`python -m benchmarks.inference --size {r["size"]}`
"""


def plot(r: dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}")
    fig, (ax1, ax2, ax3) = plt.subplots(1, 3, figsize=(15, 4.4), dpi=100)
    names = list(r["models"])
    width = 0.27
    for j, side in enumerate(SIDES):
        vals = [r["models"][n]["sides"][side]["msgs_per_s"] for n in names]
        xs = np.arange(len(names)) + (j - 1) * width
        ax1.bar(xs, vals, width, color=COLORS[side], label=LABELS[side])
        for xv, v in zip(xs, vals, strict=True):
            ax1.text(xv, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
    ax1.set_xticks(range(len(names)), names)
    ax1.set_yscale("log")
    ax1.yaxis.set_major_formatter(plain)
    ax1.set_ylim(top=ax1.get_ylim()[1] * 3)
    ax1.set_ylabel("messages / s (backlog drained, median)")
    ax1.set_title("Throughput, 1 replica, 1 partition")
    ax1.legend(fontsize=8, loc="upper left")
    loads = r["plan"]["loads"]
    for side in SIDES:
        d = [r["models"][HEADLINE]["sides"][side]["loads"][str(v)] for v in loads]
        ax2.plot(loads, [x.get("p50_ms") for x in d], "o-", color=COLORS[side], label=f"{side} p50")
        ax2.plot(
            loads, [x.get("p99_ms") for x in d], "x--", color=COLORS[side], label=f"{side} p99"
        )
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    for axis in (ax1.yaxis, ax2.xaxis, ax2.yaxis):
        axis.set_minor_formatter(NullFormatter())
    ax2.xaxis.set_major_formatter(plain)
    ax2.yaxis.set_major_formatter(plain)
    ax2.set_xlabel("offered load, messages / s")
    ax2.set_ylabel("end-to-end latency, ms")
    ax2.set_title(f"Latency vs offered load, {HEADLINE}")
    ax2.legend(fontsize=7, ncol=3)
    g = r["grid"]
    markers = dict(zip(g["replicas"], "os^D", strict=False))
    for k in g["replicas"]:
        for side, style in (("ours", "-"), ("baseline", "--")):
            cells = g["cells"].get(side, {})
            pts = [(c, cells[f"{k}x{c}"]["avg_ms"]) for c in g["clients"] if f"{k}x{c}" in cells]
            if pts:
                ax3.plot(
                    [p[0] for p in pts],
                    [p[1] for p in pts],
                    style,
                    marker=markers[k],
                    color=COLORS[side],
                    label=f"{side}, replicas = partitions = {k}",
                )
    ax3.set_xscale("log", base=2)
    ax3.set_yscale("log")
    ax3.set_xticks(g["clients"], [str(c) for c in g["clients"]])
    ax3.yaxis.set_major_formatter(plain)
    ax3.yaxis.set_minor_formatter(NullFormatter())
    ax3.set_xlabel("concurrent clients")
    ax3.set_ylabel("average latency of a 256-sample request, ms")
    ax3.set_title(f"Requests vs clients, {HEADLINE}")
    ax3.legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument(
        "--no-variants",
        action="store_true",
        help="skip the diagnostic runs (ours with batch_size=64, the baseline without flush)",
    )
    args = parser.parse_args(argv)
    result = run(SIZES[args.size], variants=not args.no_variants)
    args.out.mkdir(parents=True, exist_ok=True)
    write_json(args.out / "inference.json", result)
    (args.out / "inference.md").write_text(markdown(result))
    plot(result, args.out / "inference.png")
    print(markdown(result))


if __name__ == "__main__":
    main()
