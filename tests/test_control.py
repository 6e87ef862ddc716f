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
