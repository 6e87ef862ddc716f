"""The baseline and the echo pipelines, one `LoopWorker` Ray actor per replica: Kafka-ML's
per-message inference loop, and our ingress's consume/produce loop without a model; and the
`Collector` that reads a pipeline's output topic in the benchmark process."""

from __future__ import annotations

import json
import os
import statistics
import threading
import time
import uuid
from collections import Counter
from typing import Any

import numpy as np

from kafkaml_ray.serve.spec import InferenceSpec
from kafkaml_ray.settings import Settings

__all__ = ["LoopWorker", "Collector", "TS_HEADER", "REQ_HEADER", "IDX_HEADER"]

TS_HEADER, REQ_HEADER, IDX_HEADER = "bench-t", "bench-req", "bench-i"
COMMIT_EVERY = 16  # Kafka-ML's MAX_MESSAGES_TO_COMMIT
COMMIT_INTERVAL_S = InferenceSpec.commit_interval_s  # echo commits as our ingress does


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
            from kafkaml_ray.frameworks import TrainedModel

            self.model = TrainedModel(*model_args).load()
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
        from kafkaml_ray.serve.options import INGRESS_CONSUMER

        base = {k: v for k, v in self.kafka.items() if k != "bootstrap.servers"}
        consumer = Consumer({**self.kafka, "group.id": self.group_id, **INGRESS_CONSUMER})
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
                    # What a reader can rely on: an exactly-once pipeline's outputs count
                    # when their transaction commits (the others' at once, as before).
                    "isolation.level": "read_committed",
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
