"""Control messages as Kafka-ML writes them, and broken ones refused with a reason."""

import json

import pytest

from kafkaml_ray.ingest.control import (
    ControlError,
    ControlMessage,
    TopicRange,
    decode_key,
    encode_key,
    parse_control,
)

KAFKA_ML_VALUE = {
    "topic": "data:0:0:700,data:1:0:690",
    "input_format": "RAW",
    "input_config": {
        "data_type": "float32",
        "label_type": "int64",
        "data_reshape": "8 8",
        "label_reshape": "",
    },
    "description": "digits",
    "validation_rate": 0.1,
    "test_rate": 0.1,
    "total_msg": 1390,
    "dataset_restrictions": {},
    "unsupervised_topic": None,
    "incremental": False,
}


def test_kafka_ml_message_with_one_byte_key():
    msg = parse_control(bytes([7]), json.dumps(KAFKA_ML_VALUE).encode())
    assert msg.deployment_id == 7
    assert msg.ranges == [TopicRange("data", 0, 0, 700), TopicRange("data", 1, 0, 690)]
    assert msg.message_count == 1390 and msg.total_msg == 1390
    assert (msg.validation_rate, msg.test_rate, msg.description) == (0.1, 0.1, "digits")


@pytest.mark.parametrize("dep_id", [0, 1, 255, 256, 70000, 2**40])
def test_keys_of_any_length_round_trip(dep_id):
    key = encode_key(dep_id)
    assert len(key) == max(1, (dep_id.bit_length() + 7) // 8)
    assert decode_key(key) == dep_id


def test_header_wins_over_key():
    assert decode_key(b"\x01", [("other", b"x"), ("deployment_id", b"4242")]) == 4242


def test_entries_without_end_several_topics_and_nulls():
    value = dict(
        KAFKA_ML_VALUE,
        topic="a:0:5,b:2:10:20",
        validation_rate=None,
        test_rate=None,
        total_msg=None,
        description=None,
        input_config=None,
    )
    msg = parse_control(b"\x02", json.dumps(value).encode())
    assert msg.ranges == [TopicRange("a", 0, 5, 5), TopicRange("b", 2, 10, 20)]
    assert msg.message_count == 10
    assert (msg.validation_rate, msg.test_rate, msg.description) == (0.0, 0.0, "")


def test_to_kafka_round_trip():
    msg = ControlMessage(
        1000, [TopicRange("t", 3, 1, 9)], "JSON", {"data_type": "float64"}, "d", 0.2, 0.1
    )
    key, value, headers = msg.to_kafka()
    assert key == b"\x03\xe8" and dict(headers)["deployment_id"] == b"1000"
    back = parse_control(key, value, headers)
    assert back.ranges == msg.ranges and back.total_msg == 8 and back.input_format == "JSON"


@pytest.mark.parametrize(
    ("key", "value", "headers", "reason"),
    [
        (b"", KAFKA_ML_VALUE, None, "no deployment id"),
        (b"\x01", KAFKA_ML_VALUE, [("deployment_id", b"seven")], "not a decimal number"),
        (b"\x01", b"{not json", None, "not JSON"),
        (b"\x01", [1, 2], None, "must be a JSON object"),
        (b"\x01", dict(KAFKA_ML_VALUE, topic=""), None, "names no topic ranges"),
        (b"\x01", dict(KAFKA_ML_VALUE, topic="data:0"), None, "not topic:partition:start"),
        (b"\x01", dict(KAFKA_ML_VALUE, topic="data:x:0:1"), None, "not a number"),
        (b"\x01", dict(KAFKA_ML_VALUE, topic="data:0:9:3"), None, "start <= end"),
        (b"\x01", dict(KAFKA_ML_VALUE, input_format="XML"), None, "unknown input_format"),
        (b"\x01", dict(KAFKA_ML_VALUE, input_config={"data_type": "f"}), None, "unknown data_type"),
        (b"\x01", dict(KAFKA_ML_VALUE, validation_rate=1.5), None, "validation_rate must be"),
        (
            b"\x01",
            dict(KAFKA_ML_VALUE, validation_rate=0.5, test_rate=0.5),
            None,
            "nothing left to train",
        ),
        (b"\x01", dict(KAFKA_ML_VALUE, total_msg=-3), None, "total_msg must be"),
    ],
)
def test_broken_messages_are_refused_with_a_reason(key, value, headers, reason):
    raw = value if isinstance(value, bytes) else json.dumps(value).encode()
    with pytest.raises(ControlError, match=reason):
        parse_control(key, raw, headers)


# -- incremental (online) messages: Kafka-ML's OnlineRawSink names the plain topic ---------
ONLINE = dict(KAFKA_ML_VALUE, topic="digits", total_msg=None, test_rate=0, incremental=True)


def test_a_plain_topic_name_needs_incremental():
    batch = dict(ONLINE, incremental=False)
    with pytest.raises(ControlError, match='a plain topic name needs "incremental": true'):
        parse_control(b"\x01", json.dumps(batch).encode())
    msg = parse_control(b"\x01", json.dumps(ONLINE).encode())
    assert (msg.topics, msg.ranges, msg.incremental) == (["digits"], [], True)
    assert msg.total_msg is None and msg.value()["total_msg"] is None


def test_mixed_entries_and_labelled_ranges_take_their_start():
    value = dict(ONLINE, topic=" more:2:50 ,digits, labelled:0:10:20,other.topic_1-x")
    msg = parse_control(b"\x01", json.dumps(value).encode())
    assert msg.topics == ["digits", "other.topic_1-x"]
    assert msg.ranges == [TopicRange("more", 2, 50, 50), TopicRange("labelled", 0, 10, 10)]
    assert msg.message_count == 0
    assert msg.value()["topic"] == "digits,other.topic_1-x,more:2:50,labelled:0:10"


def test_incremental_round_trip():
    msg = parse_control(b"\x01", json.dumps(dict(ONLINE, topic="b:1:7,a:0:0:9,c")).encode())
    assert parse_control(*msg.to_kafka()) == msg
    built = ControlMessage(
        300, [TopicRange("t", 3, 5, 5)], incremental=True, topics=["digits", "x"]
    )
    key, value, headers = built.to_kafka()
    assert json.loads(value)["topic"] == "digits,x,t:3:5"
    assert json.loads(value)["total_msg"] is None
    assert parse_control(key, value, headers) == built
    with pytest.raises(ControlError, match="needs"):  # whole topics only when incremental
        ControlMessage(1, [], topics=["digits"]).to_kafka()


@pytest.mark.parametrize(
    ("topic", "incremental", "reason"),
    [
        ("__consumer_offsets", True, "not a data topic"),
        ("digits,__transaction_state:0:0", True, "not a data topic"),
        ("bad name", True, "not a data topic"),
        ("a" * 250, True, "not a data topic"),
        ("digits,", True, "is not a topic name"),
        ("d:0", True, "is not a topic name, topic:partition:start"),
        ("d:0:1:2:3", True, "is not a topic name"),
        ("d:x:1", True, "not a number"),
        ("d:0:5:3", True, "start <= end"),
        (f"d:{2**31}:0", True, "partition <="),
        (f"d:0:{2**63}", True, "start <= end <= "),
        ("d,d", True, "named twice"),
        ("d:0:1,d:0:5", True, "named twice"),
        ("d:0:1,d", True, "named twice"),
        ("d,d:0:1", True, "named twice"),
        ("", True, "names no topics"),
        (None, True, "names no topics"),
        (["digits"], True, "names no topics"),
        ("digits", "yes", "incremental must be true or false, not 'yes'"),
        ("digits", 1, "incremental must be true or false, not '1'"),
        ("digits", {}, "incremental must be true or false"),
        ("digits", False, 'plain topic name needs "incremental": true'),
        ("digits", None, 'plain topic name needs "incremental": true'),
    ],
)
def test_broken_incremental_messages_are_refused(topic, incremental, reason):
    value = dict(ONLINE, topic=topic, incremental=incremental)
    with pytest.raises(ControlError, match=reason):
        parse_control(b"\x01", json.dumps(value).encode())


def test_a_control_message_handed_over_again_after_a_crash_is_accepted(tmp_path):
    """The listener stopped between the hand-over and recording it: it reads the message
    again and hands it over again, while the training it started runs. That was recorded
    as FAILED ("not waiting for data"); a second hand-over of the same datasource is a
    no-op."""
    from sqlalchemy import select

    from kafkaml_ray.ingest.listener import ControlListener
    from kafkaml_ray.settings import Settings
    from kafkaml_ray.store import (
        Configuration,
        Datasource,
        DatasourceStatus,
        MLModel,
        ResultStatus,
        Store,
        TrainingDeployment,
        TrainingResult,
    )
    from kafkaml_ray.train.launch import on_datasource

    settings = Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'kml.db'}")
    store = Store(settings.db_url)
    with store.session() as s:
        m = MLModel(name="m", framework="pytorch", code="...")
        dep = TrainingDeployment(configuration=Configuration(name="c", models=[m]), job_id="j")
        s.add(TrainingResult(deployment=dep, model=m))
        s.flush()
        ds = Datasource(
            source_topic="ctl", source_partition=0, source_offset=0, deployment_id=dep.id,
            status=DatasourceStatus.RECEIVED,
        )  # fmt: skip
        s.add(ds)
        s.flush()
        ds_id = ds.id
    listener = object.__new__(ControlListener)  # (its hand-over alone, without a consumer)
    listener.settings, listener.store, listener.handler = settings, store, on_datasource
    listener._hand_over(ds_id)
    with store.session() as s:  # the submitted job's training started...
        s.get_one(Datasource, ds_id).status = DatasourceStatus.RECEIVED  # ...and the crash
        for r in s.scalars(select(TrainingResult)):
            r.status = ResultStatus.TRAINING
    listener._hand_over(ds_id)
    with store.session() as s:
        row = s.get_one(Datasource, ds_id)
        assert (row.status, row.error) == (DatasourceStatus.ACCEPTED, None)
    store.dispose()
