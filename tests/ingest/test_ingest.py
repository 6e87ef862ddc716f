"""Streams in, on the real broker and a real local Ray: sinks, the control listener, Kafka
ranges read into Ray Datasets, stream reuse, bad input and a foreign (kafka-python) client."""

import json
import threading
import time
import uuid

import numpy as np
import pytest
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient, NewTopic

from kafkaml_ray.ingest import AvroSink, JsonSink, RawSink
from kafkaml_ray.ingest.control import TopicRange
from kafkaml_ray.ingest.dataset import ReadError, read_ranges, split_dataset, split_sizes
from tests.conftest import (
    add_model_unvalidated,
    running_listener,
    send_like_kafka_ml,
    wait_until,
)

pytestmark = pytest.mark.integration


def _digits():
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32).reshape(-1, 8, 8), y.astype(np.int64)


def _read(settings, msg, **kw):
    return read_ranges(
        settings.kafka_config(), msg.ranges, msg.input_format, msg.input_config, **kw
    )


def _rows(data):
    rows = data.dataset.sort(["partition", "offset"]).take_all()
    x = np.stack([r["data"] for r in rows])
    y = np.asarray([r["label"] for r in rows]) if "label" in rows[0] else None
    return x, y


def _deployment(client, name="m"):
    model = add_model_unvalidated(client, name, "pytorch")
    config = client.create_configuration(f"c-{name}", [model])
    return client.deploy_training(config.id, kwargs="epochs=1")


def _create_topic(settings, topic, partitions):
    admin = AdminClient(settings.kafka_config())
    for f in admin.create_topics([NewTopic(topic, partitions)]).values():
        f.result(30)


def test_raw_sink_digits_read_back_exactly(ray_cluster, broker, settings, topic):
    x, y = _digits()
    with RawSink(
        settings.bootstrap_servers,
        topic,
        1,
        validation_rate=0.1,
        test_rate=0.1,
        control_topic=settings.control_topic,
    ) as sink:
        sink.send_many(x, y)
    msg = sink.announced
    assert msg.input_config == {
        "data_type": "float32",
        "label_type": "int64",
        "data_reshape": "8 8",
        "label_reshape": "",
    }
    assert msg.total_msg == len(x) == sum(len(r) for r in msg.ranges)
    data = _read(settings, msg)
    assert (data.count, data.malformed) == (len(x), 0)
    got_x, got_y = _rows(data)
    np.testing.assert_array_equal(got_x, x)
    np.testing.assert_array_equal(got_y, y)


def test_ranges_come_from_delivery_reports_not_positions(ray_cluster, broker, settings, topic):
    """Another producer writing the same topic meanwhile never leaks into the stream."""
    _create_topic(settings, topic, 1)
    other = Producer({"bootstrap.servers": settings.bootstrap_servers})
    sink = RawSink(
        settings.bootstrap_servers,
        topic,
        1,
        data_type="int32",
        label_type="int32",
        control_topic=settings.control_topic,
    )
    for i in range(30):
        sink.send(np.array([i, i]), i)
        if i % 10 == 9:  # interleave foreign messages, delivered between ours
            sink._producer._producer.flush()
            other.produce(topic, b"not ours at all")
            other.flush()
    msg = sink.close()
    assert len(msg.ranges) == 3  # three contiguous runs, gaps where the others landed
    data = _read(settings, msg)
    assert data.count == 30 and data.malformed == 0
    assert sorted(_rows(data)[1].tolist()) == list(range(30))


def test_avro_and_json_sinks(ray_cluster, broker, settings, topic):
    x = np.random.default_rng(1).normal(size=(50, 26)).astype(np.float32)
    y = np.arange(50)
    schema = {
        "type": "record",
        "name": "features",
        "fields": [{"name": "x", "type": {"type": "array", "items": "float"}}],
    }
    label = {"type": "record", "name": "target", "fields": [{"name": "y", "type": "long"}]}
    with AvroSink(
        settings.bootstrap_servers,
        topic,
        1,
        data_scheme=schema,
        label_scheme=label,
        control_topic=settings.control_topic,
    ) as sink:
        for xi, yi in zip(x, y, strict=True):
            sink.send_avro({"x": xi.tolist()}, {"y": int(yi)})
    gx, gy = _rows(_read(settings, sink.announced))
    np.testing.assert_allclose(gx, x)
    assert gy.tolist() == y.tolist()

    with JsonSink(
        settings.bootstrap_servers,
        topic + "-json",
        1,
        label_type="int64",
        control_topic=settings.control_topic,
    ) as sink:
        sink.send_many(x, y)
    gx, gy = _rows(_read(settings, sink.announced))
    np.testing.assert_allclose(gx, x)
    assert gy.tolist() == y.tolist()


def test_four_partitions_four_read_tasks(ray_cluster, broker, settings, topic):
    _create_topic(settings, topic, 4)
    x, y = _digits()
    with RawSink(
        settings.bootstrap_servers, topic, 1, control_topic=settings.control_topic
    ) as sink:
        sink.send_many(x[:400], y[:400])
    msg = sink.announced
    assert sorted({r.partition for r in msg.ranges}) == [0, 1, 2, 3]  # keyed by label
    data = _read(settings, msg)
    assert data.count == 400
    assert data.dataset.num_blocks() == len(msg.ranges)
    assert sorted(_rows(data)[1].tolist()) == sorted(y[:400].tolist())


def test_split_sizes_take_the_rates_as_written():
    """floor(n * rate) of the decimal rate: 0.29 * 100 is 28.999999999999996 in floats."""
    assert split_sizes(100, 0.29, 0.29) == (42, 29, 29)
    assert split_sizes(1000, 0.07, 0.57) == (360, 70, 570)
    assert split_sizes(10, 0.0, 1.0) == (0, 0, 10)


def test_split_sizes_are_exact_ordered_and_shuffled(ray_cluster, broker, settings, topic):
    with RawSink(
        settings.bootstrap_servers,
        topic,
        1,
        data_type="float32",
        label_type="int64",
        control_topic=settings.control_topic,
    ) as sink:
        for i in range(101):
            sink.send(np.full(3, i, np.float32), i)
    data = _read(settings, sink.announced)
    assert split_sizes(101, 0.1, 0.2) == (71, 10, 20)
    train, val, test = split_dataset(data, 0.1, 0.2)
    assert [d.count() for d in (train, val, test)] == [71, 10, 20]
    labels = [sorted(r["label"] for r in d.take_all()) for d in (train, val, test)]
    assert labels == [list(range(71)), list(range(71, 81)), list(range(81, 101))]  # test newest
    shuffled = [split_dataset(data, 0.1, 0.2, shuffle_seed=7)[2] for _ in range(2)]
    a, b = ([r["label"] for r in s.take_all()] for s in shuffled)
    assert len(a) == 20 and a == b and sorted(a) != list(range(81, 101))


def _control(settings, dep_id, value, key=None, headers=None):
    p = Producer({"bootstrap.servers": settings.bootstrap_servers})
    p.produce(
        settings.control_topic,
        json.dumps(value).encode() if isinstance(value, dict) else value,
        key if key is not None else bytes([dep_id]),
        headers=headers,
    )
    p.flush(30)


def test_listener_records_refused_and_unknown_and_goes_on(
    ray_cluster, broker, client, settings, topic
):
    dep = _deployment(client)
    good = {
        "topic": f"{topic}:0:0:0",
        "input_format": "RAW",
        "input_config": {"data_type": "float32"},
    }
    with running_listener(settings, handler=None):
        _control(settings, dep.id, b"{broken json")
        _control(settings, 0, good, key=(999).to_bytes(2, "big"))
        _control(settings, dep.id, dict(good, validation_rate=2))
        _control(settings, dep.id, good)
        sources = wait_until(
            lambda: (ds := client.list_datasources()) and len(ds) == 4 and ds,
            what="four datasources",
        )
    assert [d.status for d in sources] == ["refused", "unknown_deployment", "refused", "accepted"]
    assert "not JSON" in sources[0].error
    assert sources[1].deployment_id == 999 and "no training deployment" in sources[1].error
    assert "validation_rate must be" in sources[2].error
    assert sources[3].deployment_id == dep.id


def test_each_control_message_is_stored_once_across_restarts(
    ray_cluster, broker, client, settings, topic
):
    import ray

    from kafkaml_ray._private.rayutil import NAMESPACE
    from kafkaml_ray.ingest.listener import ControlListener, start_listener, stop_listener

    dep = _deployment(client)
    name = f"listener-{uuid.uuid4().hex[:6]}"
    value = {"topic": f"{topic}:0:0:0", "input_config": {"data_type": "float32"}}
    start_listener(settings, handler=None, name=name, group_id=name)
    try:
        _control(settings, dep.id, value)
        wait_until(lambda: len(client.list_datasources()) == 1, what="first datasource")
        ray.kill(ray.get_actor(name, namespace=NAMESPACE), no_restart=False)  # crash it
        _control(settings, dep.id, dict(value, description="second"))
        wait_until(lambda: len(client.list_datasources()) == 2, 120, "datasource after restart")
    finally:
        stop_listener(settings, name)
    # A re-delivery (e.g. a crash before the commit) does not store it again.
    first = client.list_datasources()[0]
    again = ControlListener(settings, handler=None, group_id=name + "-x")
    try:
        ds_id = again.handle(
            first.source_topic,
            first.source_partition,
            first.source_offset,
            bytes([dep.id]),
            json.dumps(value).encode(),
            None,
        )
    finally:
        again.close()
    assert ds_id == first.id
    assert [d.description for d in client.list_datasources()] == ["", "second"]


def _produce_raw(settings, topic, values):
    p = Producer({"bootstrap.servers": settings.bootstrap_servers})
    for v, k in values:
        p.produce(topic, v, k, partition=0)
    p.flush(30)


def test_malformed_messages_fail_or_are_skipped_and_counted(ray_cluster, broker, settings, topic):
    good = [(np.full(4, i, np.float32).tobytes(), np.int64(i).tobytes()) for i in range(20)]
    values = good[:10] + [(b"short", np.int64(0).tobytes()), (good[0][0], b"")] + good[10:]
    _produce_raw(settings, topic, values)
    rng = [TopicRange(topic, 0, 0, len(values))]
    cfg = {"data_type": "float32", "label_type": "int64", "data_reshape": "4"}
    with pytest.raises(ReadError, match=rf"malformed message at {topic}:0 offset 10: RAW data"):
        read_ranges(settings.kafka_config(), rng, "RAW", cfg)
    data = read_ranges(settings.kafka_config(), rng, "RAW", cfg, on_malformed="skip")
    assert (data.count, data.malformed) == (20, 2)
    assert any("offset 11" in e or "@11" in e for e in data.errors)
    assert sorted(_rows(data)[1].tolist()) == list(range(20))


def test_offsets_beyond_the_end_and_deleted_topics_are_clear_errors(
    ray_cluster, broker, settings, topic
):
    _produce_raw(settings, topic, [(b"\0" * 4, None)] * 5)
    cfg = {"data_type": "float32"}
    with pytest.raises(ReadError, match=rf"{topic}:0 ends at offset 5.*0..700"):
        read_ranges(settings.kafka_config(), [TopicRange(topic, 0, 0, 700)], "RAW", cfg)
    admin = AdminClient(settings.kafka_config())
    for f in admin.delete_topics([topic]).values():
        f.result(30)
    wait_until(lambda: topic not in admin.list_topics(timeout=10).topics, what="topic deleted")
    with pytest.raises(ReadError, match=rf"{topic}:0 does not exist"):
        read_ranges(
            {**settings.kafka_config(), "allow.auto.create.topics": False},
            [TopicRange(topic, 0, 0, 5)],
            "RAW",
            cfg,
        )


def test_a_broker_that_goes_away_mid_read_ends_with_an_error(ray_cluster, tmp_path):
    from kafkaml_ray.broker import EmbeddedKafka
    from kafkaml_ray.settings import Settings
    from tests.conftest import free_ports

    own = EmbeddedKafka(Settings(home=tmp_path / "own", broker_port=free_ports(2)))
    own.start()
    try:
        p = Producer({"bootstrap.servers": own.address, "linger.ms": 50})
        for i in range(20000):
            p.produce("slow", np.full(64, i, np.float32).tobytes(), partition=0)
            if i % 5000 == 0:
                p.poll(0)
        p.flush(60)
        # Tiny fetches make the read long enough to pull the broker away under it.
        config = {
            "bootstrap.servers": own.address,
            "fetch.max.bytes": 1024,
            "max.partition.fetch.bytes": 1024,
            "message.max.bytes": 1000,
            "receive.message.max.bytes": 2048,
            "fetch.wait.max.ms": 10,
        }
        errors = []

        def read():
            try:
                read_ranges(
                    config,
                    [TopicRange("slow", 0, 0, 20000)],
                    "RAW",
                    {"data_type": "float32"},
                    stall_timeout_s=5,
                )
            except ReadError as e:
                errors.append(str(e))

        t = threading.Thread(target=read)
        t.start()
        time.sleep(4)
        own.stop()
        t.join(90)
        assert not t.is_alive(), "the read hung"
        assert errors and "broker sent nothing for 5s while reading slow:0" in errors[0], errors
    finally:
        own.stop()


def test_kafka_python_client_like_kafka_ml(ray_cluster, broker, client, settings, topic):
    """kafka-python writes data and a control message byte for byte as Kafka-ML's RawSink
    (one-byte key, ranges from positions read before and after, "label_reshape": "1"); the
    listener and reader produce the same dataset as our own sink."""
    dep = _deployment(client)
    x, y = _digits()
    x, y = x[:300], y[:300]
    send_like_kafka_ml(settings, topic, dep.id, x, y)
    with running_listener(settings, handler=None):
        ds = wait_until(lambda: client.list_datasources(), what="the datasource")[0]
    assert (ds.status, ds.deployment_id, ds.total_msg) == ("accepted", dep.id, 300)
    from kafkaml_ray.ingest.control import parse_ranges

    theirs = read_ranges(
        settings.kafka_config(), parse_ranges(ds.topic), ds.input_format, ds.input_config
    )
    with RawSink(
        settings.bootstrap_servers, topic + "-ours", dep.id, control_topic=settings.control_topic
    ) as sink:
        sink.send_many(x, y)
    ours = _read(settings, sink.announced)
    for a, b in zip(_rows(theirs), _rows(ours), strict=True):
        np.testing.assert_array_equal(a, b)
    sizes = [d.count() for d in split_dataset(theirs, 0.1, 0.1)]
    assert sizes == [d.count() for d in split_dataset(ours, 0.1, 0.1)] == [240, 30, 30]


def test_resend_a_datasource_to_another_deployment(ray_cluster, broker, client, settings, topic):
    first, second = _deployment(client, "a"), _deployment(client, "b")
    with RawSink(
        settings.bootstrap_servers,
        topic,
        first.id,
        data_type="float32",
        control_topic=settings.control_topic,
    ) as sink:
        sink.send_many(np.zeros((5, 2), np.float32))
    with running_listener(settings, handler=None):
        ds = wait_until(lambda: client.list_datasources(), what="first datasource")[0]
        client.resend_datasource(ds.id, second.id)
        both = wait_until(lambda: len(d := client.list_datasources()) == 2 and d, what="resent")
    assert [d.deployment_id for d in both] == [first.id, second.id]
    assert both[0].topic == both[1].topic and both[1].status == "accepted"


def test_an_expired_datasource_says_so_and_is_not_resent(
    ray_cluster, broker, client, settings, topic
):
    """Retention deleted the start of a stored stream (here by Kafka's own DeleteRecords, as
    retention does): the datasource says it has expired and why, the CLI lists it as
    expired, and it is not re-sent; a stream whose topic was deleted says so too."""
    from click.testing import CliRunner
    from confluent_kafka import TopicPartition

    from kafkaml_ray.cli import cli
    from kafkaml_ray.errors import InvalidInput

    first, second = _deployment(client, "a"), _deployment(client, "b")
    for name in (topic, topic + "-gone"):
        with RawSink(
            settings.bootstrap_servers,
            name,
            first.id,
            data_type="float32",
            control_topic=settings.control_topic,
        ) as sink:
            sink.send_many(np.zeros((10, 2), np.float32))
    with running_listener(settings, handler=None):
        kept, gone = wait_until(
            lambda: len(d := client.list_datasources()) == 2 and d, what="two datasources"
        )
    assert kept.expired is None and gone.expired is None
    admin = AdminClient(settings.kafka_config())
    for f in admin.delete_records([TopicPartition(topic, 0, 4)]).values():
        f.result(30)
    for f in admin.delete_topics([topic + "-gone"]).values():
        f.result(30)

    def expired():
        d = client.get_datasource(kept.id)
        return d.expired and d

    kept = wait_until(expired, 60, "the datasource to show as expired")
    assert f"{topic}:0 starts at offset 4 now" in kept.expired
    assert "deleted (retention)" in kept.expired
    gone = wait_until(lambda: client.get_datasource(gone.id).expired, 60, "the deleted topic")
    assert "does not exist" in gone
    assert [bool(d.expired) for d in client.list_datasources()] == [True, True]
    with pytest.raises(InvalidInput, match="has expired"):
        client.resend_datasource(kept.id, second.id)
    listed = CliRunner().invoke(cli, ["datasource", "list"], env=settings.env())
    assert listed.exit_code == 0, listed.output
    assert listed.output.count("expired") == 2, listed.output


def test_a_recreated_control_topic_is_not_taken_for_re_deliveries(broker, client, settings):
    """The control topic deleted and created again (or the broker's data wiped, or another
    cluster behind the same address) starts again at offset 0: the new messages there are
    stored, not dropped as re-deliveries of the old ones. Rows from before the ids were
    recorded still recognise a true re-delivery by its content."""
    from kafkaml_ray.ingest.listener import ControlListener
    from kafkaml_ray.store import Datasource

    dep = _deployment(client)
    group = f"listener-{uuid.uuid4().hex[:6]}"
    admin = AdminClient(settings.kafka_config())

    def listen_for(count: int) -> ControlListener:
        listener = ControlListener(settings, handler=None, group_id=group)
        try:
            wait_until(lambda: listener.poll(0.5) or len(client.list_datasources()) >= count, 60)
        finally:
            listener.close()
        return listener

    _control(settings, dep.id, {"topic": "a:0:0:0", "input_config": {"data_type": "float32"}})
    first = listen_for(1)
    for f in admin.delete_topics([settings.control_topic]).values():
        f.result(30)
    wait_until(lambda: settings.control_topic not in admin.list_topics(timeout=10).topics, 60)
    _control(settings, dep.id, {"topic": "b:0:0:0", "input_config": {"data_type": "float32"}})
    second = listen_for(2)
    rows = client.list_datasources(check=False)
    assert [(d.source_offset, d.topic) for d in rows] == [(0, "a:0:0:0"), (0, "b:0:0:0")]
    assert first.topic_id and second.topic_id and first.topic_id != second.topic_id
    assert first.cluster_id == second.cluster_id != ""

    # A row stored before the ids were recorded (an upgraded store): the same message read
    # again at its offset is a re-delivery; another message there is new.
    with client.store.session() as s:
        old = s.get(Datasource, rows[1].id)
        old.source_cluster, old.source_topic_id = "", ""
    again = ControlListener(settings, handler=None, group_id=group + "-x")
    try:
        key = bytes([dep.id])
        same = json.dumps({"topic": "b:0:0:0", "input_config": {"data_type": "float32"}})
        assert again.handle(settings.control_topic, 0, 0, key, same.encode(), None) == rows[1].id
        other = json.dumps({"topic": "c:0:0:0", "input_config": {"data_type": "float32"}})
        new_id = again.handle(settings.control_topic, 0, 0, key, other.encode(), None)
    finally:
        again.close()
    assert new_id not in (rows[0].id, rows[1].id)
    assert len(client.list_datasources(check=False)) == 3


def test_online_sinks_announce_once_before_their_data(broker, settings, topic):
    """Online mode (Kafka-ML's OnlineRawSink): our RawSink(online=True), our OnlineRawSink and
    kafka-python writing Kafka-ML's bytes each send one control message naming the plain
    topic, before their first data message (timestamps), and nothing on closing."""
    from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

    from kafkaml_ray.errors import InvalidInput
    from kafkaml_ray.ingest import OnlineRawSink
    from kafkaml_ray.ingest.control import parse_control
    from tests.conftest import send_like_kafka_ml_online

    def read_all(name):  # every message of a one-partition topic, up to its end
        c = Consumer(settings.kafka_config(**{"group.id": uuid.uuid4().hex}))
        try:
            _, high = c.get_watermark_offsets(TopicPartition(name, 0), timeout=30)
            c.assign([TopicPartition(name, 0, OFFSET_BEGINNING)])
            out = []
            while len(out) < high:
                out += [m for m in c.consume(1000, timeout=1) if m.error() is None]
            return out
        finally:
            c.close()

    with pytest.raises(InvalidInput, match="test_rate must be 0"):
        RawSink(settings.bootstrap_servers, topic, 1, online=True, test_rate=0.1)
    x, y = _digits()
    x, y = x[:40], y[:40]
    ours = RawSink(
        settings.bootstrap_servers,
        topic + "-a",
        5,
        validation_rate=0.1,
        control_topic=settings.control_topic,
        online=True,
    )
    ours.send_many(x[:10], y[:10])
    announced = ours.announced
    ours.send_many(x[10:], y[10:])
    assert ours.close() is announced
    kml = OnlineRawSink(
        settings.bootstrap_servers,
        topic + "-b",
        6,
        validation_rate=0.1,
        control_topic=settings.control_topic,
    )
    for xi, yi in zip(x, y, strict=True):
        kml.send(xi, yi)
    kml.online_close()
    with pytest.raises(InvalidInput, match="closed"):
        kml.send(x[0], y[0])
    send_like_kafka_ml_online(settings, topic + "-c", 7, x, y)

    controls = read_all(settings.control_topic)
    assert len(controls) == 3  # one each: closing sent nothing
    ours_cfg = {"data_type": "float32", "label_type": "int64", "data_reshape": "8 8"}
    for m, name, dep, reshape in zip(
        controls, ["-a", "-b", "-c"], [5, 6, 7], ["", "", "1"], strict=True
    ):
        assert m.key() == bytes([dep])
        body = json.loads(m.value())
        assert body["topic"] == topic + name and body["incremental"] is True
        assert (body["total_msg"], body["test_rate"], body["validation_rate"]) == (None, 0, 0.1)
        assert body["input_format"] == "RAW"
        assert body["input_config"] == {**ours_cfg, "label_reshape": reshape}
        msg = parse_control(m.key(), m.value(), m.headers())
        assert (msg.deployment_id, msg.topics, msg.ranges) == (dep, [topic + name], [])
        assert msg.incremental and msg.total_msg is None
        data = read_all(topic + name)
        assert [d.value() for d in data] == [a.tobytes() for a in x]
        assert [d.key() for d in data] == [b.tobytes() for b in y]
        # The trainer starts at the first offset at or after the control message's time.
        assert m.timestamp()[1] <= min(d.timestamp()[1] for d in data)
    assert parse_control(controls[0].key(), controls[0].value()) == announced
