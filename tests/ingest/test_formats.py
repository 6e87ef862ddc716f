"""One conformance suite that every message format passes (River's habit): round trips
for every dtype and shape, empty reshape, labels present and absent, malformed input."""

import json

import numpy as np
import pytest

from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.ingest.formats import (
    DTYPES,
    AvroFormat,
    DecodeError,
    JsonFormat,
    RawFormat,
    get_format,
)

RNG = np.random.default_rng(0)
NUMERIC = [t for t in DTYPES if t != "string"]


def sample(dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    dt = np.dtype(DTYPES[dtype])
    if dt == np.bool_:
        return RNG.integers(0, 2, shape).astype(bool)
    if dt.kind in "iu":
        info = np.iinfo(dt)
        return RNG.integers(max(info.min, -100), min(info.max, 100), shape, dtype=dt)
    return RNG.normal(size=shape).astype(dt)


def avro_for(dtype: str, shape: tuple[int, ...], label: bool):
    avro_type = {
        np.int32: "int",
        np.int64: "long",
        np.float32: "float",
        np.float64: "double",
        np.bool_: "boolean",
    }
    t = avro_type[DTYPES[dtype]]
    data = {
        "type": "record",
        "name": "data",
        "fields": [{"name": "x", "type": {"type": "array", "items": t}}],
    }
    lab = {"type": "record", "name": "label", "fields": [{"name": "y", "type": "long"}]}
    return AvroFormat(
        data,
        lab if label else None,
        data_reshape=" ".join(map(str, shape)) if len(shape) > 1 else None,
    )


AVRO_TYPES = ["int32", "int64", "float32", "float64", "bool"]

# (name, factory(dtype, shape, labelled) -> format, dtypes)
FORMATS = [
    (
        "RAW",
        lambda dt, sh, lab: RawFormat(
            dt, "int64" if lab else None, " ".join(map(str, sh)) if len(sh) > 1 else ""
        ),
        NUMERIC,
    ),
    (
        "JSON",
        lambda dt, sh, lab: JsonFormat(
            dt, "int64" if lab else None, " ".join(map(str, sh)) if len(sh) > 1 else ""
        ),
        NUMERIC,
    ),
    ("AVRO", avro_for, AVRO_TYPES),
]
CASES = [
    (name, factory, dt, shape, labelled)
    for name, factory, dtypes in FORMATS
    for dt in dtypes
    for shape in [(4,), (2, 3), (8, 8)]
    for labelled in (True, False)
]


@pytest.mark.parametrize(
    ("name", "factory", "dtype", "shape", "labelled"),
    CASES,
    ids=[
        f"{c[0]}-{c[2]}-{'x'.join(map(str, c[3]))}-{'label' if c[4] else 'nolabel'}" for c in CASES
    ],
)
def test_round_trip(name, factory, dtype, shape, labelled):
    fmt = factory(dtype, shape, labelled)
    assert fmt.name == name and fmt.has_labels == labelled
    xs = [sample(dtype, shape) for _ in range(5)]
    ys = list(range(5))
    pairs = [fmt.encode(x, y) for x, y in zip(xs, ys, strict=True)]
    assert all((k is None) != labelled for _, k in pairs)
    batch = fmt.decode_batch([v for v, _ in pairs], [k for _, k in pairs])
    expect = np.stack(xs)
    assert batch.data.shape == expect.shape
    np.testing.assert_array_equal(batch.data.astype(expect.dtype), expect)
    assert batch.index.tolist() == [0, 1, 2, 3, 4] and batch.errors == []
    if labelled:
        assert batch.labels.tolist() == ys
    else:
        assert batch.labels is None
    # The same format rebuilt from its control-message config decodes the same.
    again = get_format(name, fmt.config()).decode_batch(
        [v for v, _ in pairs], [k for _, k in pairs]
    )
    np.testing.assert_array_equal(again.data, batch.data)


@pytest.mark.parametrize("name", ["RAW", "JSON", "AVRO"])
def test_empty_batch(name):
    fmt = FORMATS[[f[0] for f in FORMATS].index(name)][1]("int32", (4,), True)
    batch = fmt.decode_batch([], [])
    assert len(batch) == 0 and batch.labels is not None and len(batch.labels) == 0


def test_raw_empty_reshape_is_flat_and_string_labels():
    fmt = RawFormat("uint8", "string", "", "")
    v, k = fmt.encode(np.arange(64, dtype=np.uint8), "seven")
    batch = fmt.decode_batch([v], [k])
    assert batch.data.shape == (1, 64) and batch.labels.tolist() == ["seven"]


def test_raw_multi_dimensional_labels():
    fmt = RawFormat("float32", "float32", "3", "2")
    v, k = fmt.encode([1, 2, 3], [0.5, 1.5])
    assert fmt.decode_batch([v], [k]).labels.tolist() == [[0.5, 1.5]]


def test_json_objects_with_data_and_label():
    fmt = JsonFormat("float32", "int64", "2 2")
    values = [json.dumps({"data": [1, 2, 3, 4], "label": 3}).encode()]
    batch = fmt.decode_batch(values, [None])
    assert batch.data.shape == (1, 2, 2) and batch.labels.tolist() == [3]


def _fmt(name):
    return {
        "RAW": RawFormat("float32", "int64", "2 2"),
        "JSON": JsonFormat("float32", "int64", "2 2"),
        "AVRO": AvroFormat(
            {
                "type": "record",
                "name": "d",
                "fields": [{"name": "x", "type": {"type": "array", "items": "float"}}],
            },
            {"type": "record", "name": "l", "fields": [{"name": "y", "type": "long"}]},
            data_reshape="2 2",
        ),
    }[name]


MALFORMED = [
    # (format, value, key, field named, reason contains)
    (
        "RAW",
        b"\x00" * 15,
        None,
        "data",
        "has 15 bytes; data_type float32 with data_reshape '2 2' needs 16",
    ),
    ("RAW", None, b"", "label", "has 0 bytes; label_type int64"),
    ("RAW", None, "nokey", "label", "has no key"),
    ("JSON", b"[1, 2, 3", None, "data", "message"),
    ("JSON", b"\xff\xfe", None, "data", "message"),
    ("JSON", b"[1, 2, 3]", None, "data", "cannot reshape"),
    ("JSON", b'[1, "a", 3, 4]', None, "data", "could not convert"),
    ("JSON", None, b"{bad", "label", "message"),
    ("JSON", b"[1, 2, 1e39, 4]", None, "data", "a value is out of range for float32"),
    ("JSON", None, b"1e20", "label", "too large"),
    ("AVRO", b"\x02", None, "data", "message"),
    ("AVRO", None, b"", "label", "message"),
]


@pytest.mark.parametrize(("name", "value", "key", "fld", "reason"), MALFORMED)
def test_malformed_raises_one_error_type_naming_format_and_field(name, value, key, fld, reason):
    fmt = _fmt(name)
    good_v, good_k = fmt.encode(np.arange(4, dtype=np.float32), 1)
    bad_v = good_v if value is None else value
    bad_k = None if key == "nokey" else (good_k if key is None else key)
    values, keys = [good_v, bad_v, good_v], [good_k, bad_k, good_k]
    with pytest.raises(DecodeError) as info:
        fmt.decode_batch(values, keys)
    err = info.value
    assert (err.format, err.field, err.index) == (name, fld, 1)
    assert reason in str(err) and str(err).startswith(f"{name} {fld}: message 1")
    # Skipping keeps the good messages, in order, and reports the bad one.
    batch = fmt.decode_batch(values, keys, on_error="skip")
    assert batch.index.tolist() == [0, 2] and len(batch.data) == 2
    assert batch.labels.tolist() == [1, 1]
    assert [e.index for e in batch.errors] == [1]


@pytest.mark.parametrize(
    ("fmt", "config", "error"),
    [
        ("RAW", {"data_type": "complex64"}, "unknown data_type 'complex64'"),
        ("RAW", {"data_type": "float32", "data_reshape": "8 x"}, "data_reshape '8 x'"),
        ("AVRO", {}, "needs data_scheme"),
        ("AVRO", {"data_scheme": "{not json"}, "invalid Avro data_scheme"),
        ("CSV", {}, "unknown input_format 'CSV'"),
    ],
)
def test_bad_input_config(fmt, config, error):
    with pytest.raises(InvalidInput, match=error):
        get_format(fmt, config)


# The control message Kafka-ML's own RawSink writes for scikit-learn's digits: types and
# shapes inferred from the first sample, so the numpy scalar label is announced as "1".
KAFKA_ML_RAW_SINK_DIGITS = (
    bytes([3]),  # the deployment id, one byte
    b'{"topic": "digits:0:0:1797", "input_format": "RAW", "input_config": '
    b'{"data_type": "float32", "label_type": "int64", "data_reshape": "8 8", '
    b'"label_reshape": "1"}, "description": "digits", "validation_rate": 0.1, '
    b'"test_rate": 0.1, "total_msg": 1797}',
)


@pytest.mark.parametrize(
    "label_reshape, shape", [("1", ()), ("1 1", ()), ("", ()), ("2", (2,)), ("2 1", (2, 1))]
)
def test_a_one_element_label_is_a_scalar_as_in_kafka_ml(label_reshape, shape):
    """Kafka-ML's trainers take any label of exactly one element as a scalar; so do we."""
    from kafkaml_ray.ingest.control import parse_control

    msg = parse_control(*KAFKA_ML_RAW_SINK_DIGITS)
    cfg = {**msg.input_config, "label_reshape": label_reshape}
    fmt = get_format(msg.input_format, cfg)
    n = int(np.prod(shape, dtype=np.int64)) if shape else 1
    x = RNG.normal(size=(3, 8, 8)).astype(np.float32)
    y = np.arange(3 * n, dtype=np.int64).reshape(3, *shape)
    batch = fmt.decode_batch([a.tobytes() for a in x], [b.tobytes() for b in y])
    assert batch.labels.shape == (3, *shape) and batch.labels.dtype == np.int64
    np.testing.assert_array_equal(batch.labels, y)
    np.testing.assert_array_equal(batch.data, x)
    # The stored description says what was decoded: a scalar label has no reshape.
    assert fmt.config()["label_reshape"] == " ".join(map(str, shape))


@pytest.mark.parametrize("name", ["RAW", "JSON", "AVRO"])
def test_one_element_labels_are_scalars_in_every_format(name):
    if name == "RAW":
        fmt = RawFormat("float32", "int64", "2", "1")
    elif name == "JSON":
        fmt = JsonFormat("float32", "int64", "2", "1")
    else:
        lab = {"type": "record", "name": "l", "fields": [{"name": "y", "type": "long"}]}
        fmt = avro_for("float32", (2,), True)
        fmt = AvroFormat(fmt.data_schema, lab, label_reshape="1")
    label = (lambda i: np.int64(i)) if name == "AVRO" else (lambda i: np.int64([i]))
    pairs = [fmt.encode(np.float32([i, i]), label(i)) for i in range(3)]
    values, keys = [v for v, _ in pairs], [k for _, k in pairs]
    batch = fmt.decode_batch(values, keys)
    assert batch.labels.shape == (3,)
    assert batch.labels.tolist() == [0, 1, 2]


# The control message Kafka-ML's own OnlineRawSink writes, once, on its first send() of the
# digits: the plain topic name, "incremental": true, no count (and no closing message).
KAFKA_ML_ONLINE_RAW_SINK_DIGITS = (
    bytes([3]),  # the deployment id, one byte
    b'{"topic": "digits", "unsupervised_topic": null, "input_format": "RAW", '
    b'"description": "digits", "input_config": {"data_type": "float32", '
    b'"label_type": "int64", "data_reshape": "8 8", "label_reshape": "1"}, '
    b'"validation_rate": 0.1, "test_rate": 0, "total_msg": null, '
    b'"dataset_restrictions": {}, "incremental": true}',
)


def test_kafka_ml_online_raw_sink_control_message():
    from kafkaml_ray.ingest.control import parse_control

    msg = parse_control(*KAFKA_ML_ONLINE_RAW_SINK_DIGITS)
    assert (msg.deployment_id, msg.topics, msg.ranges) == (3, ["digits"], [])
    assert msg.incremental is True and msg.total_msg is None and msg.unsupervised_topic is None
    assert (msg.validation_rate, msg.test_rate) == (0.1, 0.0)
    fmt = get_format(msg.input_format, msg.input_config)
    x = RNG.normal(size=(3, 8, 8)).astype(np.float32)
    y = np.arange(3, dtype=np.int64)
    batch = fmt.decode_batch([a.tobytes() for a in x], [b.tobytes() for b in y])
    np.testing.assert_array_equal(batch.data, x)
    assert batch.labels.shape == (3,) and batch.labels.tolist() == [0, 1, 2]
