"""An inference as a Ray Serve application: Kafka ingress replicas that predict, or feed a
batched predictor.

``KafkaIngress`` replicas form one consumer group on the input topic (each gets at least one
partition). Each one takes what is waiting (up to ``batch_size`` messages, without waiting
when the topic is quiet), decodes it with the inference's input format, predicts it and
produces one ``{"values": [...]}`` message per input to the output topic, in input order.

Where the prediction runs: an inference without a GPU predicts inside each ingress replica
(its own copy of the model: no hop between processes, which costs about 5 ms per call). An
inference with a GPU fraction asks the ``Predictor`` deployment, which holds the GPU
(``@serve.batch``: concurrent chunks of several replicas and HTTP requests are predicted
together); up to ``in_flight`` chunks per replica wait for it at once, so the consume loop
decodes and produces while the predictor works. HTTP requests always go to the
``Predictor``. Each output keeps the input's key and headers and gets provenance headers.
Inputs that cannot be decoded or predicted go to ``<output_topic>.dlq`` with their original
bytes and an ``error`` header. An input offset is committed only after its prediction (or
dead letter) is acknowledged by the broker: delivery is at least once. Commits are sent at
most every ``commit_interval_s`` (a commit per chunk would be one request per message at
light load), and at once when the replica stops or loses partitions.

With ``exactly_once`` each replica's producer is transactional (``transactional.id``
``kafkaml-inference-<id>-<replica>``): the outputs and dead letters of the chunks taken
until nothing is waiting or ``commit_interval_s`` has passed, and the input offsets they
cover (``send_offsets_to_transaction``, fenced by the consumer group's generation), commit
in one Kafka transaction: one per input at a light load, large ones through a backlog. A
replica that fails, is killed, or loses partitions aborts (or leaves to time out) what it
had not committed, and the inputs are taken again from the group's committed offsets: a
``read_committed`` reader of the output topic sees each input's prediction (or dead letter)
exactly once.

The ingress replicas report their consumer lag to Serve (``record_autoscaling_stats``) for
the lag-driven autoscaling policy in `kafkaml_ray.serve.autoscale`, and answer HTTP: POST
``{"data": [sample, ...]}`` to the application's route returns ``{"values": [...]}``.

On Kubernetes the same application is built from its import path
(``kafkaml_ray.serve.app:build_app`` with ``{"inference_id": N}``), reading the inference
from the store named by ``KAFKAML_DB``.

Kept whole: ``KafkaIngress`` is one Serve deployment whose consume loop, commits (at least
once, or in transactions), rebalance hooks and stats share one replica's state, and Serve
pickles the class by value (a base class or helper module would travel with it too); the
import path above names this module in every rendered RayService.
"""

from __future__ import annotations

import logging
import math
import threading
import time
from collections import deque
from dataclasses import dataclass
from typing import Any

import numpy as np
import orjson
from ray import serve

from kafkaml_ray.ingest.prediction import prediction_message
from kafkaml_ray.serve.options import INGRESS_CONSUMER
from kafkaml_ray.serve.predictor import Predictor, ServedModel
from kafkaml_ray.serve.spec import InferenceSpec, spec_from_store, unlabelled
from kafkaml_ray.settings import Settings

__all__ = ["KafkaIngress", "Predictor", "build_app", "app_for", "HEADERS", "VERSION_HEADER"]

logger = logging.getLogger(__name__)

#: Provenance headers added to every prediction (and dead letter).
HEADERS = ("kafkaml-result-id", "kafkaml-input-partition", "kafkaml-input-offset")
#: The header naming the version of an online result that made a prediction.
VERSION_HEADER = "kafkaml-model-version"
#: Consecutive consume-loop errors without a commit, after which the replica reports
#: itself unhealthy (Serve replaces it); the loop backs off meanwhile.
MAX_LOOP_ERRORS = 5
#: How long an exactly-once replica's transaction may stay open before the broker aborts
#: it (a killed replica's: read_committed readers of its partitions wait that long). A
#: transaction holds at most ``commit_interval_s`` of chunks; 10 s is Kafka Streams' choice.
TRANSACTION_TIMEOUT_MS = 10_000
#: The largest HTTP request body read (bytes); a larger one is answered 413 unread.
MAX_HTTP_BODY = 32 * 2**20


class _Done:
    """A prediction made in the ingress replica, read like the Predictor's response."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value


@dataclass
class _Batch:
    """Produced messages of one consumed chunk, waiting for the broker's acks."""

    remaining: int
    offsets: dict[tuple[str, int], int]  # the next offset to commit, per partition
    first: dict[tuple[str, int], int]  # its first offset, per partition (to consume again)
    failed: str | None = None

    def delivered(self, err, _msg) -> None:
        """The producer's delivery callback, for each output of the chunk."""
        if err is not None:
            self.failed = str(err)
        self.remaining -= 1


@dataclass
class _Chunk:
    """A consumed chunk whose decoded samples are with the predictor."""

    msgs: list
    batch: _Batch
    index: range | list[int]  # positions in msgs of the decoded samples
    data: np.ndarray
    response: Any  # the predictor's DeploymentResponse (or _Done)


@serve.deployment(name="KafkaIngress", max_ongoing_requests=16)
class KafkaIngress:
    """Consumes the input topic in the inference's consumer group and produces predictions."""

    def __init__(self, spec: InferenceSpec, predictor: Any):
        # (confluent_kafka is imported in the methods: Serve pickles this class by value,
        # and its types at module level would be pickled along and fail to load.)
        from confluent_kafka import Consumer, Producer

        from kafkaml_ray.ingest.formats import get_format
        from kafkaml_ray.ingest.sinks import producer_config

        self.spec, self.predictor, self.model = spec, predictor, None
        self.result_header = (HEADERS[0], str(spec.result_id).encode())
        if spec.predict_in_ingress:
            self.model = ServedModel(spec)
        # With the model here a prediction is done when asked: nothing to keep in flight.
        self.depth = 1 if self.model else max(1, spec.in_flight)
        self.format = get_format(spec.input_format, unlabelled(spec.input_config))
        settings = spec.settings
        try:
            self.replica = serve.get_replica_context().replica_id.unique_id
        except Exception:  # noqa: BLE001 - outside Serve (tests)
            self.replica = "local"
        consumer = {"group.id": spec.group_id, **INGRESS_CONSUMER}
        producer = {
            **settings.kafka,
            # A lone prediction leaves at once; a backlog still batches. Uncompressed:
            # lz4 added latency at light load; the outputs are small JSON.
            "linger.ms": 0,
        }
        if spec.exactly_once:  # (inputs written in transactions: only committed ones)
            consumer["isolation.level"] = "read_committed"
            producer["transactional.id"] = f"kafkaml-inference-{spec.inference_id}-{self.replica}"
            # A killed replica's open transaction holds back read_committed readers of its
            # partitions until the broker aborts it: after this long.
            producer["transaction.timeout.ms"] = TRANSACTION_TIMEOUT_MS
        self.consumer = Consumer(settings.kafka_config(**consumer))
        self.producer = Producer(producer_config(settings.bootstrap_servers, producer))
        if spec.exactly_once:
            self.producer.init_transactions(60)
        self.in_transaction = False
        self._start_loop_state()
        self.lag, self.partitions, self.assigned = 0, 0, []
        self._topic_checked = 0.0
        self._rate = (time.monotonic(), 0)
        self.msgs_per_s = 0.0
        self._stop = threading.Event()
        self.consumer.subscribe(
            [spec.input_topic],
            on_assign=self._on_assign,
            on_revoke=self._on_revoke,
            on_lost=self._on_revoke,
        )
        self._thread = threading.Thread(target=self._run, name="kafka-ingress", daemon=True)
        self._thread.start()
        # The stats row is written by a thread of its own: a store write in the consume loop
        # would hold up the inputs that arrive meanwhile. (The consumer itself is used by the
        # consume loop only: its calls from another thread can block for good.)
        threading.Thread(target=self._report, name="kafka-ingress-stats", daemon=True).start()

    # -- the consume loop (its own thread) ---------------------------------------------
    def _start_loop_state(self) -> None:
        self.pending: deque[_Batch] = deque()  # consumed chunks, oldest first
        self.acked: dict[tuple[str, int], int] = {}  # offsets to commit at the next commit
        self.last_commit = -math.inf  # the first commit is due at once
        self.in_flight: deque[_Chunk] = deque()  # of those, the ones being predicted
        self.counts = {"consumed": 0, "predicted": 0, "dead_letters": 0}
        self.errors = 0  # consume-loop errors since the last commit
        self.unhealthy: str | None = None  # why, once errors reach MAX_LOOP_ERRORS

    def _run(self) -> None:
        last_lag = 0.0
        while not self._stop.is_set():
            try:
                self._step()
                if time.monotonic() - last_lag > self.spec.stats_interval_s:
                    self._refresh_lag()
                    last_lag = time.monotonic()
            except Exception as e:  # noqa: BLE001 - keep consuming from the last commit
                logger.exception("inference %d: ingress loop error", self.spec.inference_id)
                self._stop.wait(self._failed(e))
                self._rewind()
        self._drain()

    def _failed(self, e: Exception) -> float:
        """Count a consume-loop error; the seconds to back off. After ``MAX_LOOP_ERRORS``
        without a commit between them the replica reports itself unhealthy, saying why."""
        self.errors += 1
        if self.errors >= MAX_LOOP_ERRORS:
            self.unhealthy = (
                f"the consume loop failed {self.errors} times without progress; "
                f"last: {type(e).__name__}: {str(e)[:300]}"
            )
        return min(0.5 * 2 ** (self.errors - 1), 10.0)

    def _step(self) -> None:
        """Take, predict, produce and commit what can be: one turn of the consume loop."""
        # (An open transaction is committed as soon as nothing is waiting: not blocking
        # first, which would hold its outputs back from read_committed readers.)
        msgs = self._take(block=not self.in_flight and not self.in_transaction)
        if msgs:
            self._submit(msgs)
        # Wait for the oldest prediction when the pipeline is full or nothing new came.
        while self.in_flight and (not msgs or len(self.in_flight) >= self.depth):
            self._finish(self.in_flight.popleft())
        self.producer.poll(0)
        self._commit_acked(quiet=not msgs)

    def _take(self, block: bool) -> list:
        """What is waiting, up to batch_size; if ``block``, waits briefly when nothing is."""
        n = self.spec.batch_size
        if block:  # (consume() with a timeout would wait for n messages or the whole timeout)
            first = self.consumer.poll(0.1)
            if first is None:
                return []
            msgs = [first] + self.consumer.consume(num_messages=n - 1, timeout=0)
        else:
            msgs = self.consumer.consume(num_messages=n, timeout=0)
        good = []
        for m in msgs:
            if m.error() is None:
                good.append(m)
            else:
                logger.warning("inference %d: %s", self.spec.inference_id, m.error())
        return good

    def _submit(self, msgs: list) -> None:
        """Decode a consumed chunk, dead-letter what does not decode, send the rest off."""
        if self.spec.exactly_once and not self.in_transaction:
            self.producer.begin_transaction()
            self.in_transaction = True
        batch = _Batch(remaining=len(msgs), offsets={}, first={})
        for m in msgs:  # (a partition's messages come in offset order)
            tp, offset = (m.topic(), m.partition()), m.offset()
            batch.offsets[tp] = offset + 1
            batch.first.setdefault(tp, offset)
        self.pending.append(batch)
        self.counts["consumed"] += len(msgs)
        decoded = self.format.decode_batch([m.value() for m in msgs], None, on_error="skip")
        for err in decoded.errors:
            self._dead_letter(msgs[err.index], str(err), batch)
        if len(decoded):
            response = (
                self._predict_here(decoded.data)
                if self.model
                else self.predictor.predict.remote(decoded.data)
            )
            index = decoded.index.tolist() if decoded.errors else range(len(msgs))
            self.in_flight.append(_Chunk(msgs, batch, index, decoded.data, response))

    def _predict_here(self, data: np.ndarray) -> _Done:
        try:
            return _Done(self.model.predict(data))
        except Exception as e:  # noqa: BLE001 - each sample retried alone in _finish
            return _Done(e)

    def _finish(self, chunk: _Chunk) -> None:
        """Produce a chunk's predictions (or dead letters), in input order."""
        out = chunk.response.result()
        if isinstance(out, Exception):  # the whole batch failed: find the bad samples
            if self.model:
                out = self.model.one_by_one(chunk.data)
            else:
                out = self.predictor.predict_one_by_one.remote(chunk.data).result()
        out, version = out
        extra = None if version is None else [(VERSION_HEADER, str(version).encode())]
        if isinstance(out, np.ndarray):  # to Python numbers at once, not row by row
            rows = out.tolist()
        else:  # one by one: arrays, and error texts for the samples that failed
            rows = [p if isinstance(p, str) else np.asarray(p).tolist() for p in out]
        topic, msgs, batch = self.spec.output_topic, chunk.msgs, chunk.batch
        for i, row in zip(chunk.index, rows, strict=True):
            if isinstance(row, str):
                self._dead_letter(msgs[i], f"prediction failed: {row}", batch)
                continue
            why = self._produce(topic, msgs[i], prediction_message(row), batch, extra)
            if why is None:
                self.counts["predicted"] += 1
            else:  # e.g. larger than the producer may send: the input goes to the DLQ
                self._dead_letter(msgs[i], f"its prediction could not be written: {why}", batch)

    def _rewind(self) -> None:
        """After an error: forget the uncommitted chunks and consume them again (what
        their open transaction wrote is aborted: no reader of committed data sees it)."""
        from confluent_kafka import TopicPartition

        if self.in_transaction:
            self._abort()
        firsts: dict[tuple[str, int], int] = {}
        for batch in self.pending:
            for tp, o in batch.first.items():
                firsts[tp] = min(firsts.get(tp, o), o)
        self.pending.clear()
        self.in_flight.clear()
        for (t, p), o in firsts.items():
            if (t, p) in self.assigned:
                try:
                    self.consumer.seek(TopicPartition(t, p, o))
                except Exception:  # noqa: BLE001 - e.g. revoked meanwhile: the group resumes it
                    logger.exception("inference %d: rewinding %s[%d]", self.spec.inference_id, t, p)

    def _headers(self, msg, extra: list | None = None) -> list:
        return [
            *(msg.headers() or ()),
            self.result_header,
            (HEADERS[1], str(msg.partition()).encode()),
            (HEADERS[2], str(msg.offset()).encode()),
            *(extra or ()),
        ]

    def _dead_letter(self, msg, error: str, batch: _Batch) -> None:
        """The input, as it came, to the dead-letter topic with an ``error`` header; without
        its value when even that cannot be written (e.g. too large)."""
        self.counts["dead_letters"] += 1
        header = error.encode("utf-8", "replace")[:4000]
        why = self._produce(self.spec.dlq_topic, msg, msg.value(), batch, [("error", header)])
        if why is None:
            return
        note = f" (the input's {len(msg.value() or b'')} bytes not copied: {why})"
        header = (error[:3000] + note).encode("utf-8", "replace")[:4000]
        why = self._produce(self.spec.dlq_topic, msg, None, batch, [("error", header)])
        if why is not None:  # nowhere to put it: never commit past it
            batch.delivered(why, None)

    def _produce(
        self, topic: str, msg, value: bytes | None, batch: _Batch, extra: list | None = None
    ) -> str | None:
        """Send one output of ``batch``; None, or why the producer refused it at once."""
        from confluent_kafka import KafkaException

        while True:
            try:
                self.producer.produce(
                    topic,
                    value,
                    msg.key(),
                    headers=self._headers(msg, extra),
                    on_delivery=batch.delivered,
                )
                return None
            except BufferError:
                self.producer.poll(0.05)
            except (KafkaException, ValueError, TypeError) as e:
                return str(e)[:500]

    def _commit_transaction(self, wait: bool = False) -> None:
        """Commit the open transaction (exactly once): every chunk taken since it began is
        predicted and produced first, then its input offsets join it, then it commits. At
        most every ``commit_interval_s`` (larger transactions cost less), at once if
        ``wait`` (nothing is waiting: a reader of committed data waits for the commit)."""
        from confluent_kafka import TopicPartition

        now = time.monotonic()
        if not self.in_transaction or (
            not wait and now - self.last_commit < self.spec.commit_interval_s
        ):
            return
        while self.in_flight:
            self._finish(self.in_flight.popleft())
        offsets: dict[tuple[str, int], int] = {}
        for batch in self.pending:
            offsets.update(batch.offsets)
        self.producer.send_offsets_to_transaction(
            [TopicPartition(t, p, o) for (t, p), o in offsets.items()],
            self.consumer.consumer_group_metadata(),
            30,
        )
        self.producer.commit_transaction(60)
        self.in_transaction = False
        self.pending.clear()
        self.last_commit = now
        self.errors, self.unhealthy = 0, None  # progress

    def _abort(self) -> None:
        """Abort the open transaction; a producer that cannot (fenced by a newer replica of
        the same id, or fatally failed) makes the replica unhealthy: Serve replaces it."""
        from confluent_kafka import KafkaException

        self.in_transaction = False
        try:
            self.producer.abort_transaction(30)
        except KafkaException as e:
            self.unhealthy = f"its transactional producer cannot go on: {e}"
            raise

    def _commit_acked(self, wait: bool = False, quiet: bool = False) -> None:
        """Commit the offsets of every consumed chunk whose outputs are all acknowledged:
        at most every ``commit_interval_s``, at once if ``wait``. Exactly once, a ``quiet``
        input (nothing was waiting) also commits at once."""
        if self.spec.exactly_once:
            return self._commit_transaction(wait or quiet)
        failed = None
        while self.pending and self.pending[0].remaining == 0:
            if self.pending[0].failed:  # never commit past an unacknowledged output
                failed = self.pending[0].failed
                break
            self.acked.update(self.pending.popleft().offsets)
        now = time.monotonic()
        if self.acked and (wait or failed or now - self.last_commit >= self.spec.commit_interval_s):
            from confluent_kafka import TopicPartition

            self.consumer.commit(
                offsets=[TopicPartition(t, p, o) for (t, p), o in self.acked.items()],
                asynchronous=not wait,
            )
            self.acked.clear()
            self.last_commit = now
            self.errors, self.unhealthy = 0, None  # progress
        if failed:
            raise RuntimeError(f"a prediction was not delivered: {failed}")

    def _on_assign(self, consumer, partitions) -> None:
        self.assigned = sorted({*self.assigned, *((p.topic, p.partition) for p in partitions)})

    def _on_revoke(self, consumer, partitions) -> None:
        # Before the partitions move: finish, deliver and commit what was taken (no duplicates).
        try:
            while self.in_flight:
                self._finish(self.in_flight.popleft())
            self.producer.flush(30)
            self._commit_acked(wait=True)
        except Exception:  # noqa: BLE001 - raised into librdkafka, it drops fetched messages
            logger.exception("inference %d: finishing before a rebalance", self.spec.inference_id)
            self._rewind()  # what stays assigned is consumed again from its last commit
        gone = {(p.topic, p.partition) for p in partitions}
        self.assigned = [tp for tp in self.assigned if tp not in gone]

    def _report(self) -> None:
        """Every ``stats_interval_s``: the rate and the stats row (in the stats thread)."""
        while not self._stop.wait(self.spec.stats_interval_s):
            try:
                now, consumed = time.monotonic(), self.counts["consumed"]
                t0, n0 = self._rate
                self.msgs_per_s = (consumed - n0) / (now - t0)
                self._rate = (now, consumed)
                self._write_stats()
            except Exception:  # noqa: BLE001 - e.g. the store away for a while: next time
                if not self._stop.is_set():  # (not the consumer closed as the replica stops)
                    logger.exception("inference %d: stats", self.spec.inference_id)

    def _refresh_lag(self) -> None:
        """The consumer lag and the input topic's partition count (in the consume loop)."""
        from confluent_kafka import TopicPartition

        if not self.partitions or time.monotonic() - self._topic_checked > 30:
            md = self.consumer.list_topics(self.spec.input_topic, timeout=2)
            self.partitions = len(md.topics[self.spec.input_topic].partitions)
            self._topic_checked = time.monotonic()
        tps = [TopicPartition(t, p) for t, p in self.assigned]
        lag = 0
        if tps:
            positions = self.consumer.position(tps)
            # A partition just assigned has no position until its first fetch: it resumes
            # from the group's committed offset (or the start), so count from there.
            unknown = [tp for tp in positions if tp.offset < 0]
            committed = {
                (tp.topic, tp.partition): tp.offset
                for tp in (self.consumer.committed(unknown, timeout=5) if unknown else [])
            }
            for tp in positions:
                low, high = self.consumer.get_watermark_offsets(tp, cached=True) or (0, 0)
                pos = tp.offset if tp.offset >= 0 else committed.get((tp.topic, tp.partition), -1)
                lag += max(0, high - (pos if pos >= 0 else low))
        self.lag = lag

    def _write_stats(self) -> None:
        from kafkaml_ray.store import ReplicaStats, Store

        store = getattr(self, "_store", None) or Store.for_url(self.spec.settings.db_url)
        self._store = store
        with store.session() as s:
            row = s.get(ReplicaStats, (self.spec.inference_id, self.replica))
            if row is None:
                row = ReplicaStats(inference_id=self.spec.inference_id, replica=self.replica)
                s.add(row)
            row.consumed, row.predicted = self.counts["consumed"], self.counts["predicted"]
            row.dead_letters, row.lag = self.counts["dead_letters"], self.lag
            row.msgs_per_s, row.partitions = self.msgs_per_s, [list(tp) for tp in self.assigned]

    def _drain(self) -> None:
        try:
            while self.in_flight:
                self._finish(self.in_flight.popleft())
            self.producer.flush(30)
            self._commit_acked(wait=True)
        finally:
            self.consumer.close()

    # -- Serve hooks -------------------------------------------------------------------
    def record_autoscaling_stats(self) -> dict[str, float]:
        """Consumer lag and partition count, for the lag-driven autoscaling policy."""
        return {"lag": float(self.lag), "partitions": float(self.partitions)}

    async def __call__(self, request) -> dict[str, Any]:
        """HTTP: POST {"data": [sample, ...]} -> {"values": [prediction, ...]}."""
        from starlette.responses import JSONResponse

        raw = bytearray()
        async for part in request.stream():
            raw += part
            if len(raw) > MAX_HTTP_BODY:
                return JSONResponse(
                    {"error": f"the request body is over {MAX_HTTP_BODY} bytes"}, status_code=413
                )
        try:
            body = orjson.loads(raw)
            samples = body["data"] if isinstance(body, dict) else body
            data = np.asarray(samples, dtype=np.float32)
            if data.ndim == 0 or data.dtype == object:
                raise ValueError("'data' must be a list of samples")
        except Exception as e:  # noqa: BLE001
            return JSONResponse({"error": f"bad request: {e}"}, status_code=400)
        out = await self.predictor.predict.remote(data)
        if isinstance(out, Exception):
            return JSONResponse({"error": f"prediction failed: {out}"}, status_code=422)
        values, version = out
        return {"values": np.asarray(values).tolist(), **({"version": version} if version else {})}

    async def check_health(self) -> None:
        if not self._thread.is_alive():
            raise RuntimeError("the Kafka consume loop stopped")
        if self.unhealthy:
            raise RuntimeError(self.unhealthy)

    def __del__(self) -> None:
        self._stop.set()
        if self.model is not None:
            self.model.close()
        if self._thread.is_alive():
            self._thread.join(30)


def app_for(
    spec: InferenceSpec,
    ingress: dict[str, Any] | None = None,
    predictor: dict[str, Any] | None = None,
):
    """The Serve application of an inference; the dicts are deployment options."""
    pred = Predictor.options(**(predictor or {})).bind(spec)
    return KafkaIngress.options(**(ingress or {})).bind(spec, pred)


def build_app(args: dict[str, Any]):
    """Import-path builder (``kafkaml_ray.serve.app:build_app``) for serve configs and
    KubeRay RayServices: the inference is read from the store named by ``KAFKAML_DB``."""
    settings = Settings.from_env()
    return app_for(spec_from_store(settings, int(args["inference_id"])))
