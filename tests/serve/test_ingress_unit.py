"""The ingress loop's bookkeeping with fakes for Kafka and the predictor (no broker, no Ray):
predictions leave in input order with several chunks in flight, offsets are committed only
behind acknowledged outputs, and a failed delivery rewinds to the first unacknowledged input.
The real thing runs in tests/serve/test_inference.py."""

from __future__ import annotations

import json
import threading
import time
from collections import deque

import numpy as np

from kafkaml_ray.frameworks import TrainedModel
from kafkaml_ray.ingest.formats import get_format
from kafkaml_ray.serve.app import KafkaIngress
from kafkaml_ray.serve.predictor import ServedModel
from kafkaml_ray.serve.spec import InferenceSpec
from kafkaml_ray.settings import Settings


class Msg:
    def __init__(self, offset: int, value: bytes, partition: int = 0):
        self._offset, self._value, self._partition = offset, value, partition

    def topic(self):
        return "in"

    def partition(self):
        return self._partition

    def offset(self):
        return self._offset

    def value(self):
        return self._value

    def key(self):
        return str(self._offset).encode()

    def headers(self):
        return None

    def error(self):
        return None


class Consumer:
    def __init__(self, msgs):
        self.msgs, self.commits, self.seeks = deque(msgs), [], []

    def consume(self, num_messages, timeout):
        return [self.msgs.popleft() for _ in range(min(num_messages, len(self.msgs)))]

    def poll(self, timeout):
        return self.msgs.popleft() if self.msgs else None

    def commit(self, offsets, asynchronous):
        self.commits.append({(tp.topic, tp.partition): tp.offset for tp in offsets})

    def seek(self, tp):
        self.seeks.append((tp.topic, tp.partition, tp.offset))


class Producer:
    """Acknowledges on poll; fails the deliveries of the inputs in ``fail``."""

    def __init__(self, fail=()):
        self.fail, self.waiting, self.sent = set(fail), [], []

    def produce(self, topic, value, key, headers, on_delivery):
        self.waiting.append((topic, value, key, on_delivery))

    def poll(self, timeout):
        for topic, value, key, cb in self.waiting:
            failed = int(key) in self.fail
            if not failed:
                out = json.loads(value)["values"] if topic == "out" else value
                self.sent.append((topic, int(key), out))
            cb("broker down" if failed else None, None)
        self.waiting.clear()


class Response:
    def __init__(self, value, log):
        self.value, self.log = value, log

    def result(self):
        self.log.append("wait")
        return self.value


class Predictor:
    """Doubles each sample; logs its calls and the waits for their results."""

    def __init__(self, log):
        self.log = log
        self.predict = self

    def remote(self, data):
        self.log.append(f"call {len(data)}")
        return Response((data * 2, None), self.log)  # (predictions, version)


class Model:
    """Doubles each sample; a batch holding a negative sample fails as a whole."""

    def predict(self, data):
        if (data < 0).any():
            raise ValueError("negative input")
        return data * 2


def ingress(
    msgs, fail=(), batch_size=2, in_flight=3, model=None, commit_interval_s=0.0, producer=None
):
    ing = KafkaIngress.func_or_class.__new__(KafkaIngress.func_or_class)
    cfg = {"data_type": "float32", "data_reshape": "1"}
    ing.spec = InferenceSpec(
        inference_id=1, result_id=7, trained=TrainedModel("pytorch", "", "", [1], None, ""),
        input_topic="in", output_topic="out", input_format="RAW",
        input_config=cfg, settings=Settings(), batch_size=batch_size, in_flight=in_flight,
        commit_interval_s=commit_interval_s, exactly_once=producer is not None,
    )  # fmt: skip
    ing.format = get_format("RAW", cfg)
    ing.consumer, ing.producer = Consumer(msgs), producer or Producer(fail)
    ing.in_transaction = False
    ing.calls = []
    ing.predictor = Predictor(ing.calls)
    ing.model = ServedModel(ing.spec, model) if model else None
    ing.depth = 1 if model else in_flight
    ing._start_loop_state()  # as KafkaIngress.__init__ does
    ing.assigned = [("in", 0)]
    ing.result_header = ("kafkaml-result-id", b"7")
    ing._stop, ing._thread = threading.Event(), threading.Thread(target=print)  # for __del__
    return ing


def raw(x: float) -> bytes:
    return np.float32(x).tobytes()


def test_chunks_in_flight_keep_the_input_order_and_commit_behind_acks():
    ing = ingress([Msg(i, raw(i)) for i in range(7)])
    for _ in range(5):
        ing._step()
    # three chunks with the predictor before the loop waits for the first
    assert ing.calls[:5] == ["call 2", "call 2", "call 2", "wait", "call 1"]
    assert [(k, v) for _, k, v in ing.producer.sent] == [(i, [2.0 * i]) for i in range(7)]
    assert ing.consumer.commits[-1] == {("in", 0): 7}
    assert ing.counts == {"consumed": 7, "predicted": 7, "dead_letters": 0}


def test_malformed_inputs_go_to_the_dead_letter_topic_and_are_committed():
    ing = ingress([Msg(0, raw(1)), Msg(1, b"xx"), Msg(2, raw(3))], batch_size=3)
    ing._step()
    ing._step()
    sent = sorted((k, t, v) for t, k, v in ing.producer.sent)
    assert sent == [(0, "out", [2.0]), (1, "out.dlq", b"xx"), (2, "out", [6.0])]
    assert ing.counts["dead_letters"] == 1
    assert ing.consumer.commits[-1] == {("in", 0): 3}


def test_a_failed_delivery_is_never_committed_past_and_is_consumed_again():
    ing = ingress([Msg(i, raw(i)) for i in range(6)], fail={3})
    try:
        for _ in range(5):
            ing._step()
        raise AssertionError("a failed delivery must stop the commits")
    except RuntimeError as e:
        assert "not delivered: broker down" in str(e)
    assert all(c[("in", 0)] <= 2 for c in ing.consumer.commits)  # chunk [0, 1] at most
    ing._rewind()
    assert ing.consumer.seeks == [("in", 0, 2)]  # the failed chunk [2, 3] comes again
    assert not ing.pending and not ing.in_flight


def test_predicting_in_the_ingress_finds_the_sample_that_fails():
    ing = ingress([Msg(0, raw(1)), Msg(1, raw(-1)), Msg(2, raw(3))], batch_size=3, model=Model())
    ing._step()
    ing._step()
    assert not ing.calls  # the Predictor deployment was not asked
    sent = sorted((k, t) for t, k, _ in ing.producer.sent)
    assert sent == [(0, "out"), (1, "out.dlq"), (2, "out")]
    assert ing.consumer.commits[-1] == {("in", 0): 3}


def test_commits_are_sent_at_most_every_interval_and_at_once_on_stop():
    ing = ingress([Msg(i, raw(i)) for i in range(6)], batch_size=1, commit_interval_s=3600)
    for _ in range(7):
        ing._step()
    assert ing.consumer.commits == [{("in", 0): 1}]  # the first; the others wait their turn
    assert ing.acked == {("in", 0): 6} and len(ing.producer.sent) == 6
    ing._commit_acked(wait=True)  # as on stop and on a rebalance
    assert ing.consumer.commits[-1] == {("in", 0): 6} and not ing.acked


def test_a_new_replica_that_follows_starts_on_the_newest_version(tmp_path, monkeypatch):
    """A replica started (or restarted) after versions 2 and 3 were published served the
    deploy's version 1 until its first check; it starts on version 3."""
    from kafkaml_ray.store import MLModel, ResultVersion, Store, TrainingResult

    settings = Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'kml.db'}")
    with Store(settings.db_url).session() as s:
        r = TrainingResult(model=MLModel(name="m", framework="pytorch", code="..."))
        s.add(r)
        s.flush()
        for v in (1, 2, 3):
            s.add(ResultVersion(result_id=r.id, version=v, window=v, weights_uri=f"w{v}"))
        rid = r.id
    loaded = []
    monkeypatch.setattr(ServedModel, "_load", lambda self, uri: loaded.append(uri) or uri)
    spec = InferenceSpec(
        inference_id=1, result_id=rid, trained=TrainedModel("pytorch", "", "", [1], None, "w1"),
        input_topic="in", output_topic="out",
        input_format="RAW", input_config={}, settings=settings, version=1, follow=True,
        follow_interval_s=3600,
    )  # fmt: skip
    served = ServedModel(spec)
    assert served.current == ("w3", 3) and loaded == ["w3"]
    served._stop.set()


def test_a_followed_inference_rebuilt_after_an_edit_serves_the_code_it_trained_with(tmp_path):
    """What a replica is built from when it starts again (on Kubernetes: `build_app`, from
    the store) after the model was edited: the result's trained code and shapes, and the
    newest published version's weights."""
    from kafkaml_ray.serve.spec import spec_from_store
    from kafkaml_ray.store import (
        Inference,
        MLModel,
        ModelVersion,
        ResultVersion,
        Store,
        TrainingResult,
    )

    settings = Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'kml.db'}")
    with Store(settings.db_url).session() as s:
        m = MLModel(name="m", framework="pytorch", code="trained code", input_shape=[4])
        s.add(m)
        s.flush()
        v1 = ModelVersion(model_id=m.id, number=1, sha256="a", code="trained code", input_shape=[4])
        r = TrainingResult(model=m, model_version=v1, weights_uri="batch")
        s.add_all([v1, r])
        s.flush()
        for v in (1, 2):
            s.add(ResultVersion(result_id=r.id, version=v, window=v, weights_uri=f"w{v}"))
        inf = Inference(result_id=r.id, input_topic="in", output_topic="out", follow=True)
        s.add(inf)
        s.flush()
        inf_id = inf.id
        # The edit, as `Client.update_model` makes it: a new code version, new shapes.
        m.code, m.input_shape = "edited code", [8]
        s.add(
            ModelVersion(model_id=m.id, number=2, sha256="b", code="edited code", input_shape=[8])
        )
    spec = spec_from_store(settings, inf_id)
    t = spec.trained
    assert (t.code, t.input_shape, t.code_version, t.weights_uri) == ("trained code", [4], 1, "w2")
    assert spec.follow and spec.version == 2


class TxnProducer(Producer):
    """A transactional producer: what a transaction wrote, and the input offsets sent with
    it, are seen (``sent``, ``committed``) once it commits; an abort drops both."""

    def __init__(self, fail_commits=0):
        super().__init__()
        self.open, self.committed, self.log, self.fail_commits = None, [], [], fail_commits

    def begin_transaction(self):
        assert self.open is None, "a transaction is open already"
        self.open, self.offsets = [], None
        self.log.append("begin")

    def produce(self, topic, value, key, headers, on_delivery):
        assert self.open is not None, "produced outside a transaction"
        self.open.append(
            (topic, int(key), json.loads(value)["values"] if topic == "out" else value)
        )
        on_delivery(None, None)

    def send_offsets_to_transaction(self, offsets, group_metadata, timeout):
        assert group_metadata == "group-metadata"
        self.offsets = {(tp.topic, tp.partition): tp.offset for tp in offsets}

    def commit_transaction(self, timeout):
        if self.fail_commits:
            self.fail_commits -= 1
            raise RuntimeError("the broker went away")
        self.sent += self.open
        self.committed.append(self.offsets)
        self.open = None
        self.log.append("commit")

    def abort_transaction(self, timeout):
        self.open = None
        self.log.append("abort")


def test_exactly_once_commits_outputs_and_offsets_in_one_transaction_or_neither():
    producer = TxnProducer(fail_commits=1)
    ing = ingress(
        [Msg(0, raw(1)), Msg(1, b"xx"), Msg(2, raw(3)), Msg(3, raw(4))],
        model=Model(), commit_interval_s=3600, producer=producer,
    )  # fmt: skip
    ing.consumer.consumer_group_metadata = lambda: "group-metadata"
    ing.last_commit = time.monotonic()  # (the next commit is an interval away)
    ing._step()
    ing._step()
    assert producer.log == ["begin"] and producer.sent == []  # (nothing seen before commit)
    try:
        ing._commit_acked(wait=True)
        raise AssertionError("the failed commit must surface")
    except RuntimeError:
        ing._rewind()  # as the consume loop does after an error
    assert producer.log == ["begin", "abort"] and producer.sent == [] == producer.committed
    assert ing.consumer.seeks == [("in", 0, 0)] and not ing.consumer.commits
    # Consumed again (as after the seek), then committed: outputs, the dead letter and
    # the offsets together, once; the consumer itself commits nothing.
    ing.consumer.msgs.extend([Msg(0, raw(1)), Msg(1, b"xx"), Msg(2, raw(3)), Msg(3, raw(4))])
    ing._step()
    ing._step()
    ing._commit_acked(wait=True)
    assert producer.log == ["begin", "abort", "begin", "commit"]
    assert sorted((k, t) for t, k, _ in producer.sent) == [
        (0, "out"), (1, "out.dlq"), (2, "out"), (3, "out"),
    ]  # fmt: skip
    assert producer.committed == [{("in", 0): 4}] and not ing.consumer.commits


def test_exactly_once_commits_as_soon_as_nothing_is_waiting():
    """A light load is not held back for the commit interval: the transaction commits once
    the input is quiet (a read_committed reader sees nothing before the commit)."""
    producer = TxnProducer()
    ing = ingress(
        [Msg(0, raw(1)), Msg(1, raw(2)), Msg(2, raw(3))],
        model=Model(), commit_interval_s=3600, producer=producer,
    )  # fmt: skip
    ing.consumer.consumer_group_metadata = lambda: "group-metadata"
    ing.last_commit = time.monotonic()  # (the next timed commit is an hour away)
    ing._step()  # takes 0 and 1: more is waiting, the transaction stays open
    assert producer.log == ["begin"]
    ing._step()  # takes 2
    assert producer.log == ["begin"]
    ing._step()  # nothing waiting: commits
    assert producer.log == ["begin", "commit"]
    assert producer.committed == [{("in", 0): 3}]
    assert [k for _, k, _ in producer.sent] == [0, 1, 2]
    ing._step()  # quiet, no transaction open: nothing to do
    assert producer.log == ["begin", "commit"]
