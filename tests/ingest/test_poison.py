"""Poison inputs: every entry point that takes outside bytes or text answers with the
project's own error types (never another exception, never an unbounded allocation), and the
streams go on past the poison: the control listener stores a bad control message as refused
and commits past it, the ingress dead-letters a bad input and commits past it.

Property-based with Hypothesis: CI runs the ``ci`` profile (bounded examples, see
conftest.py); ``pytest tests/ingest/test_poison.py --hypothesis-profile=deep`` runs many more. The
listener on the real broker is at the end (integration).
"""

from __future__ import annotations

import json
import threading
import uuid

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.exc import OperationalError

from kafkaml_ray.errors import InvalidInput, KafkaMLError
from kafkaml_ray.ingest.control import (
    ControlError,
    ControlMessage,
    TopicRange,
    format_sources,
    parse_control,
    parse_sources,
)
from kafkaml_ray.ingest.formats import DecodeError, get_format, parse_reshape
from kafkaml_ray.ingest.listener import ControlListener
from kafkaml_ray.store import Datasource, DatasourceStatus, Store
from kafkaml_ray.train.kwargs import parse_kwargs
from kafkaml_ray.train.tune import check_space
from tests.serve.test_ingress_unit import Consumer as FakeConsumer
from tests.serve.test_ingress_unit import Msg, Producer, ingress, raw

JSON = st.recursive(
    st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=20),
    lambda inner: st.lists(inner, max_size=5) | st.dictionaries(st.text(max_size=10), inner),
    max_leaves=20,
)
FIELDS = {
    "topic": st.text(max_size=40) | st.just("data:0:0:10") | JSON,
    "input_format": st.sampled_from(["RAW", "AVRO", "JSON", "raw", ""]) | JSON,
    "input_config": st.dictionaries(
        st.sampled_from(
            ["data_type", "label_type", "data_reshape", "label_reshape", "data_scheme"]
        ),
        st.sampled_from(["float32", "int64", "8 8", "1", "0", "-3", "1e9 1e9"]) | JSON,
    )
    | JSON,
    "validation_rate": JSON,
    "test_rate": JSON,
    "total_msg": JSON,
    "description": JSON,
    "dataset_restrictions": JSON,
    "unsupervised_topic": JSON,
    "incremental": JSON,
}
# Incremental (online) messages: plain names, odd names, partitions and huge numbers.
NAMES = st.sampled_from(["digits", "__consumer_offsets", "a.b_c-d", "", " ", "a" * 250])
NAMES |= st.text(max_size=12)
NUMBERS = st.integers(0, 9).map(str) | st.integers(-5, 2**70).map(str) | st.text(max_size=4)
ENTRIES = (
    st.sampled_from(["digits", "d:0:5", "d:1:5:9", "e:3:0:0"])
    | NAMES
    | st.builds(
        lambda t, nums: ":".join([t, *nums]), NAMES, st.lists(NUMBERS, min_size=1, max_size=4)
    )
)
ONLINE = st.fixed_dictionaries(
    {
        "topic": st.lists(ENTRIES, min_size=0, max_size=5).map(",".join),
        "incremental": st.just(True) | JSON,
    },
    optional={k: v for k, v in FIELDS.items() if k not in ("topic", "incremental", "input_config")}
    | {"input_config": st.just({"data_type": "float32"}) | FIELDS["input_config"]},
)
BODIES = (st.fixed_dictionaries({}, optional=FIELDS) | ONLINE).map(lambda d: json.dumps(d).encode())
HEADERS = st.lists(
    st.tuples(st.sampled_from(["deployment_id", "other"]), st.binary(max_size=12) | st.none()),
    max_size=2,
)


def only_our_errors(fn, *args, **kwargs):
    """Run ``fn``; an error must be one of the project's own (``KafkaMLError``)."""
    try:
        return fn(*args, **kwargs)
    except KafkaMLError:
        return None


# -- control messages -----------------------------------------------------------------------
@given(key=st.binary(max_size=12) | st.none(), value=BODIES | st.binary(), headers=HEADERS)
def test_any_control_message_is_parsed_or_refused_with_a_reason(key, value, headers):
    try:
        msg = parse_control(key, value, headers)
    except ControlError as e:
        assert str(e)
        return
    assert isinstance(msg, ControlMessage) and (msg.ranges or msg.topics)
    assert msg.incremental or not msg.topics
    if msg.incremental:  # written back and read again (by the online trainer), the same
        assert parse_sources(format_sources(msg.topics, msg.ranges)) == (msg.topics, msg.ranges)
        assert parse_control(*msg.to_kafka()).to_kafka() == msg.to_kafka()


@pytest.mark.parametrize(
    ("key", "value", "headers", "reason"),
    [  # the inputs that made the listener lose control messages (issue 14)
        (b"\x01", b'{"topic": "d:0:0:1"}', [("deployment_id", "²".encode())], "decimal"),
        (b"\x01", b'{"topic": "d:0:0:1"}', [("deployment_id", b"9" * 5000)], "decimal"),
        (b"\x01", b'{"topic": "d:0:0:1", "input_format": 5}', None, "input_format"),
        (b"\x01", b"[" * 100_000, None, "nested too deeply"),
        (b"\x01", b'{"topic": "d:0:0:%d"}' % 10**30, None, "start <= end"),
        (b"\xff" * 9, b'{"topic": "d:0:0:1"}', None, "key has 9 bytes"),
        (b"\x01", b'{"topic": "d:0:0:1", "description": {}}', None, "description"),
        (
            b"\x01",
            b'{"topic": "d:0:0:1", "input_config": {"data_reshape": "100000 100000"}}',
            None,
            "elements a sample",
        ),
        (b"\x01", b'{"topic": "__consumer_offsets:0:0:1"}', None, "not a data topic"),
        (b"\x01", b'{"topic": "digits"}', None, 'needs "incremental": true'),
        (b"\x01", b'{"topic": "__consumer_offsets", "incremental": true}', None, "not a data"),
        (b"\x01", b'{"topic": "d:0:%d", "incremental": true}' % 10**30, None, "start <= end"),
        (b"\x01", b'{"topic": "d", "incremental": "yes"}', None, "incremental must be"),
        (b"\x01", b'{"topic": ",", "incremental": true}', None, "not a topic name"),
    ],  # fmt: skip
)
def test_poison_control_messages_are_refused_with_a_reason(key, value, headers, reason):
    with pytest.raises(ControlError, match=reason):
        parse_control(key, value, headers)


# -- data in each format --------------------------------------------------------------------
FORMATS = [
    ("RAW", {"data_type": "float32", "data_reshape": "2 2", "label_type": "int64"}),
    ("RAW", {"data_type": "string"}),
    ("JSON", {"data_type": "float32", "data_reshape": "2", "label_type": "int64"}),
    ("JSON", {"data_type": "int32"}),
    (
        "AVRO",
        {
            "data_scheme": json.dumps(
                {"type": "record", "name": "d", "fields": [{"name": "x", "type": "float"}]}
            ),
            "label_scheme": json.dumps(
                {"type": "record", "name": "l", "fields": [{"name": "y", "type": "int"}]}
            ),
        },
    ),
]
PAYLOADS = st.binary(max_size=64) | JSON.map(lambda v: json.dumps(v).encode()) | st.none()


@pytest.mark.parametrize(("name", "config"), FORMATS, ids=[f[0] for f in FORMATS])
@given(values=st.lists(PAYLOADS, max_size=6), keys=st.lists(PAYLOADS, max_size=6))
@settings(suppress_health_check=[HealthCheck.too_slow])
def test_any_data_decodes_or_names_the_bad_messages(name, config, values, keys):
    fmt = get_format(name, config)
    keys = (keys + [None] * len(values))[: len(values)]
    batch = fmt.decode_batch(values, keys, on_error="skip")  # never raises
    assert len(batch) + len(batch.errors) == len(values)
    assert all(isinstance(e, DecodeError) for e in batch.errors)
    only_our_errors(fmt.decode_batch, values, keys, on_error="raise")


def test_deeply_nested_json_is_a_bad_message_not_a_crash():
    fmt = get_format("JSON", {"data_type": "float32"})
    batch = fmt.decode_batch([b"[" * 100_000, b"[1, 2]"], on_error="skip")
    assert batch.index.tolist() == [1] and "nested too deeply" in str(batch.errors[0])


@given(name=JSON, config=JSON)
def test_any_format_settings_make_a_format_or_are_refused(name, config):
    only_our_errors(get_format, name, config)


def test_a_huge_reshape_is_refused_before_anything_is_allocated():
    with pytest.raises(InvalidInput, match="elements a sample"):
        parse_reshape("100000 100000", "data_reshape")


# -- text the user writes -----------------------------------------------------------------
@given(text=st.text(max_size=60) | st.from_regex(r"[a-z_]+=[-0-9.e()\[\], ]*", fullmatch=True))
def test_any_kwargs_text_is_parsed_or_refused(text):
    for kind in ("train", "val"):
        only_our_errors(parse_kwargs, text, kind)


def test_kwargs_that_close_the_call_are_refused_clearly():
    with pytest.raises(InvalidInput, match="name=value"):
        parse_kwargs("epochs=5), (1")


@given(space=JSON)
def test_any_search_space_is_checked_or_refused(space):
    only_our_errors(check_space, space)


# -- inference inputs through the ingress (fakes for Kafka and the model) -------------------
class Model:
    def predict(self, data):
        return data * 2


@given(values=st.lists(st.binary(max_size=12) | st.none(), min_size=1, max_size=12))
def test_every_input_is_answered_or_dead_lettered_and_the_commit_moves_on(values):
    ing = ingress([Msg(i, v) for i, v in enumerate(values)], model=Model())
    for _ in range(len(values) + 2):
        ing._step()
        ing.producer.poll(0)
    ing._commit_acked(wait=True)
    answered = sorted(k for _, k, _ in ing.producer.sent)
    assert answered == list(range(len(values)))  # each input once: a prediction or a DLQ copy
    assert ing.consumer.commits[-1] == {("in", 0): len(values)}


class TooLarge(Producer):
    """Refuses any message over ``limit`` bytes at once, as librdkafka does."""

    def __init__(self, limit):
        super().__init__()
        self.limit = limit

    def produce(self, topic, value, key, headers, on_delivery):
        from confluent_kafka import KafkaError, KafkaException

        if len(value or b"") > self.limit:
            raise KafkaException(KafkaError(KafkaError.MSG_SIZE_TOO_LARGE))
        super().produce(topic, value, key, headers, on_delivery)


def test_an_input_too_large_to_copy_is_dead_lettered_without_its_value():
    big = raw(1.0) * 300_000  # does not decode (RAW, one float32 a sample); too big to copy
    ing = ingress([Msg(0, big), Msg(1, raw(2.0))], model=Model())
    ing.producer = TooLarge(limit=1000)
    for _ in range(3):
        ing._step()
        ing.producer.poll(0)
    ing._commit_acked(wait=True)
    sent = {k: (t, v) for t, k, v in ing.producer.sent}
    assert sent[0] == ("out.dlq", None) and sent[1] == ("out", [4.0])
    assert ing.consumer.commits[-1] == {("in", 0): 2}


def test_a_delivery_that_always_fails_makes_the_replica_unhealthy_after_some_tries():
    import asyncio

    from kafkaml_ray.serve import app

    ing = ingress([Msg(0, raw(1.0))], fail={0}, model=Model())
    # (after each rewind the input comes again: the fake hands out copies)
    ing.consumer = FakeConsumer([Msg(0, raw(1.0)) for _ in range(3 * app.MAX_LOOP_ERRORS)])
    for _ in range(app.MAX_LOOP_ERRORS):
        with pytest.raises(RuntimeError, match="not delivered") as e:
            ing._step()  # (the fake producer answers in _step's poll)
        ing._failed(e.value)  # what the consume loop does with its error
        ing._rewind()
    assert ing.consumer.commits == []  # never past the undelivered output
    ing._thread = threading.Thread(target=ing._stop.wait)  # the consume loop still runs
    ing._thread.start()
    try:
        with pytest.raises(RuntimeError, match="failed 5 times without progress.*not delivered"):
            asyncio.run(ing.check_health())
    finally:
        ing._stop.set()


# -- the control listener: a bad message is stored as refused, the store away is retried ----
class ListenerConsumer:
    def __init__(self, msgs):
        self.msgs, self.commits, self.seeks = list(msgs), [], []

    def consume(self, num_messages, timeout):
        out, self.msgs = self.msgs[:num_messages], self.msgs[num_messages:]
        return out

    def commit(self, message, asynchronous):
        self.commits.append(message.offset())

    def seek(self, tp):
        self.seeks.append(tp.offset)


class ControlMsg(Msg):
    def __init__(self, offset, key, value, headers=None):
        super().__init__(offset, value)
        self._key, self._headers = key, headers

    def topic(self):
        return "control"

    def key(self):
        return self._key

    def headers(self):
        return self._headers

    def timestamp(self):
        return (1, 1_700_000_000_000)  # (TIMESTAMP_CREATE_TIME, ms)


def listener(tmp_path, msgs, db: str | None = None) -> ControlListener:
    from kafkaml_ray.settings import Settings

    lst = ControlListener.__new__(ControlListener)
    lst.settings = Settings(db=db or f"sqlite:///{tmp_path / 'kml.db'}")
    lst.store, lst.handler, lst.processed = Store(lst.settings.db_url), None, 0
    lst.consumer = ListenerConsumer(msgs)
    lst.cluster_id, lst.topic_id = "cluster-id", "topic-id"  # what _identify reads from Kafka
    return lst


GOOD = ControlMessage(deployment_id=1, ranges=[TopicRange("d", 0, 0, 5)]).to_kafka()


@given(
    poison=st.lists(
        st.tuples(st.binary(max_size=10) | st.none(), BODIES | st.binary(max_size=40), HEADERS),
        max_size=5,
    )
)
@settings(suppress_health_check=[HealthCheck.function_scoped_fixture], max_examples=25)
def test_the_listener_stores_every_message_and_commits_past_poison(tmp_path, poison):
    path = tmp_path / uuid.uuid4().hex
    path.mkdir()
    msgs = [ControlMsg(i, k, v, h) for i, (k, v, h) in enumerate(poison)]
    msgs.append(ControlMsg(len(msgs), *GOOD))
    lst = listener(path, msgs)
    assert lst.poll() == len(msgs)
    assert lst.consumer.commits == list(range(len(msgs)))
    with lst.store.session() as s:
        rows = s.query(Datasource).order_by(Datasource.source_offset).all()
        assert [r.source_offset for r in rows] == list(range(len(msgs)))
        assert all(r.error for r in rows if r.status == DatasourceStatus.REFUSED)
        assert rows[-1].status == DatasourceStatus.UNKNOWN_DEPLOYMENT  # parsed, well formed


def test_the_store_away_does_not_move_the_commit(tmp_path, monkeypatch):
    lst = listener(tmp_path, [ControlMsg(0, *GOOD), ControlMsg(1, *GOOD)])
    real = lst.store.session

    def away():
        raise OperationalError("SELECT", {}, Exception("connection refused"))

    monkeypatch.setattr(lst.store, "session", away)
    with pytest.raises(OperationalError):
        lst.poll()
    assert lst.consumer.commits == [] and lst.consumer.seeks == [0]  # read again from 0
    monkeypatch.setattr(lst.store, "session", real)
    lst.consumer.msgs = [ControlMsg(0, *GOOD), ControlMsg(1, *GOOD)]  # as the seek brings
    assert lst.poll() == 2 and lst.consumer.commits == [0, 1]


@pytest.mark.parametrize("db", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_nul_characters_that_postgresql_refuses_are_stored_refused(tmp_path, db):
    """PostgreSQL's text refuses NUL: a message holding one is still stored (refused, its
    text escaped) and the commit moves on; the store must not refuse it forever."""
    import os

    from kafkaml_ray.store import Base

    url = None
    if db == "postgres":
        url = os.environ.get("KAFKAML_TEST_POSTGRES")
        if not url:
            pytest.skip("KAFKAML_TEST_POSTGRES is not set (scripts/test.sh sets it)")
    described = ControlMessage(
        deployment_id=1, ranges=[TopicRange("d", 0, 0, 5)], description="a\x00b"
    ).to_kafka()
    msgs = [
        ControlMsg(0, *described),  # parses; the store may refuse its description
        ControlMsg(1, b"\x01", b"\x00 not JSON", None),  # refused; its text has a NUL
        ControlMsg(2, *GOOD),
    ]
    lst = listener(tmp_path, msgs, url)
    Base.metadata.drop_all(lst.store.engine)
    Base.metadata.create_all(lst.store.engine)
    try:
        assert lst.poll() == 3 and lst.consumer.commits == [0, 1, 2]
        with lst.store.session() as s:
            rows = s.query(Datasource).order_by(Datasource.source_offset).all()
            assert [r.source_offset for r in rows] == [0, 1, 2]
            assert rows[1].status == DatasourceStatus.REFUSED and "\x00" not in rows[1].error
    finally:
        Base.metadata.drop_all(lst.store.engine)
        lst.store.dispose()


# -- the same on the real broker ----------------------------------------------------------
@pytest.mark.integration
def test_a_burst_of_poison_then_a_good_message_are_all_recorded(broker, settings):
    from confluent_kafka import Producer as KafkaProducer

    from tests.conftest import running_listener, wait_until

    burst = [
        (b"\x01", b'{"topic": "d:0:0:1"}', [("deployment_id", "²".encode())]),
        (b"\x01", b"[" * 100_000, None),
        (b"\xff" * 9, b'{"topic": "d:0:0:1"}', None),
        GOOD,
    ]
    producer = KafkaProducer(settings.kafka_config())
    for key, value, headers in burst:
        producer.produce(settings.control_topic, value, key, headers=headers)
    producer.flush(30)
    store = Store(settings.db_url)
    with running_listener(settings, handler=None) as lst:

        def stored():
            with store.session() as s:
                return s.query(Datasource).order_by(Datasource.source_offset).all()

        rows = wait_until(lambda: len(stored()) == 4 and stored(), 60, "four control messages")
        wait_until(lambda: lst.processed == 4, 30, "the listener to count them")
    assert [r.status for r in rows[:3]] == [DatasourceStatus.REFUSED] * 3
    assert "decimal" in rows[0].error and "nested" in rows[1].error and "9 bytes" in rows[2].error
    assert rows[3].status == DatasourceStatus.UNKNOWN_DEPLOYMENT


class TapMsg(Msg):
    def __init__(self, value, headers):
        super().__init__(0, value)
        self._headers = headers

    def headers(self):
        return self._headers

    def timestamp(self):
        return (1, 0)


def test_an_input_header_named_error_does_not_make_a_prediction_a_failure():
    from kafkaml_ray.serve.tap import read_prediction

    mine = [("error", b"the sender's own header")]
    good = read_prediction(TapMsg(b'{"values": [1.5]}', mine), dead_letter=False)
    assert (good.values, good.error) == ([1.5], None)
    dead = read_prediction(TapMsg(b"\x00", [*mine, ("error", b"RAW data: ...")]), dead_letter=True)
    assert dead.error == "RAW data: ..."
