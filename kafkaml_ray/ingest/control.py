"""Control messages: the announcement that a data stream is ready for a deployment.

Kafka-ML's wire contract (see DESIGN.md): the key is the deployment id as a big-endian
unsigned integer (Kafka-ML writes one byte; any length is accepted, the shortest is written),
a ``deployment_id`` header (decimal text) wins over the key, and the value is JSON.

>>> msg = ControlMessage(deployment_id=300, ranges=[TopicRange("data", 0, 0, 700)],
...                      input_format="RAW", input_config={"data_type": "float32"})
>>> key, value, headers = msg.to_kafka()
>>> key, headers
(b'\\x01,', [('deployment_id', b'300')])
>>> parse_control(key, value).ranges
[TopicRange(topic='data', partition=0, start=0, end=700)]
>>> [str(r) for r in parse_ranges("data:0:0:700,data:1:5")]  # no end: no messages
['data:0:0:700', 'data:1:5:5']

An *incremental* (online) message names whole topics, as Kafka-ML's ``OnlineRawSink`` does,
and no end:

>>> online = parse_control(b"\\x07", b'{"topic": "digits", "incremental": true}')
>>> online.topics, online.ranges, online.incremental, online.total_msg
(['digits'], [], True, None)
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.ingest.formats import get_format
from kafkaml_ray.settings import Settings

__all__ = [
    "ControlMessage",
    "TopicRange",
    "ControlError",
    "parse_control",
    "parse_ranges",
    "format_ranges",
    "parse_sources",
    "format_sources",
    "encode_key",
    "decode_key",
    "send_control",
]


class ControlError(InvalidInput):
    """A control message that cannot be used; the message says why."""


#: The largest id, partition and offset a control message may name: ids and partitions are
#: 32-bit in Kafka and in the store, offsets 64-bit.
MAX_ID = 2**31 - 1
MAX_OFFSET = 2**63 - 1


@dataclass(frozen=True)
class TopicRange:
    """Messages ``start`` (inclusive) to ``end`` (exclusive) of one topic partition."""

    topic: str
    partition: int
    start: int
    end: int

    def __len__(self) -> int:
        return self.end - self.start

    def __str__(self) -> str:
        return f"{self.topic}:{self.partition}:{self.start}:{self.end}"


@dataclass
class ControlMessage:
    """A parsed control message; ``to_kafka()`` writes it in Kafka-ML's form.

    A batch message (``incremental`` false) names its messages in ``ranges``. An incremental
    (online) one names whole ``topics`` (every partition, from the control message's time on)
    and/or partitions in ``ranges`` as empty ranges whose ``start`` is where to begin; it has
    no end and ``total_msg`` stays None.
    """

    deployment_id: int
    ranges: list[TopicRange]
    input_format: str = "RAW"
    input_config: dict[str, Any] = field(default_factory=dict)
    description: str = ""
    validation_rate: float = 0.0
    test_rate: float = 0.0
    total_msg: int | None = None
    dataset_restrictions: dict[str, Any] = field(default_factory=dict)
    unsupervised_topic: str | None = None
    incremental: bool = False
    topics: list[str] = field(default_factory=list)  # whole topics (incremental only)

    @property
    def message_count(self) -> int:
        return sum(len(r) for r in self.ranges)

    def value(self) -> dict[str, Any]:
        out = asdict(self)
        for name in ("deployment_id", "ranges", "topics"):
            out.pop(name)
        if self.incremental:
            out["topic"] = format_sources(self.topics, self.ranges)
        elif self.topics:
            raise ControlError('a plain topic name needs "incremental": true')
        else:
            out["topic"] = format_ranges(self.ranges)
            if out["total_msg"] is None:
                out["total_msg"] = self.message_count
        return out

    def to_kafka(self) -> tuple[bytes, bytes, list[tuple[str, bytes]]]:
        """``(key, value, headers)`` as Kafka-ML's clients write them (plus the header)."""
        return (
            encode_key(self.deployment_id),
            json.dumps(self.value()).encode(),
            [("deployment_id", str(self.deployment_id).encode())],
        )


def encode_key(deployment_id: int) -> bytes:
    """The shortest big-endian unsigned bytes of ``deployment_id`` (one byte up to 255)."""
    if deployment_id < 0:
        raise ControlError(f"deployment id {deployment_id} is negative")
    return deployment_id.to_bytes(max(1, (deployment_id.bit_length() + 7) // 8), "big")


def decode_key(key: bytes | None, headers: Sequence[tuple[str, bytes | None]] | None = None) -> int:
    """The deployment id: the ``deployment_id`` header if present, else the key."""
    for name, raw in headers or ():
        if name == "deployment_id":
            text = (raw or b"").decode("utf-8", "replace").strip()
            if not (text.isascii() and text.isdigit()) or len(text) > 19:
                raise ControlError(
                    f"the deployment_id header {text[:40]!r} is not a decimal number "
                    f"from 0 to {MAX_ID}"
                )
            return int(text)
    if not key:
        raise ControlError(
            "no deployment id: the key is empty and there is no deployment_id header"
        )
    if len(key) > 8:
        raise ControlError(f"the key has {len(key)} bytes: a deployment id has at most 4")
    return int.from_bytes(key, "big")


_TOPIC = re.compile(r"[A-Za-z0-9._-]{1,249}")


def _is_topic(name: str) -> bool:
    return not name.startswith("__") and _TOPIC.fullmatch(name) is not None


def _not_a_topic(entry: str, name: str, what: str) -> ControlError:
    return ControlError(
        f"{what} {entry[:80]!r}: {name[:80]!r} is not a data topic (Kafka "
        "topic names have up to 249 letters, digits, '.', '_' and '-'; '__' begins "
        "Kafka's internal ones)"
    )


def _range(entry: str, parts: list[str], what: str = "topic range") -> TopicRange:
    """``parts`` of ``topic:partition:start[:end]``, checked (no end: an empty range)."""
    if not _is_topic(parts[0]):
        raise _not_a_topic(entry, parts[0], what)
    try:
        nums = [int(p) for p in parts[1:]]
    except ValueError:
        raise ControlError(f"{what} {entry[:80]!r} has a part that is not a number") from None
    partition, start = nums[0], nums[1]
    end = nums[2] if len(nums) == 3 else start
    if not (0 <= partition <= MAX_ID and 0 <= start <= end <= MAX_OFFSET):
        raise ControlError(
            f"{what} {entry[:80]!r}: need 0 <= partition <= {MAX_ID} and "
            f"0 <= start <= end <= {MAX_OFFSET}"
        )
    return TopicRange(parts[0], partition, start, end)


def parse_ranges(text: str) -> list[TopicRange]:
    """``"t:p:start:end,..."`` (``end`` exclusive; ``t:p:start`` alone holds no messages)."""
    if not isinstance(text, str) or not text.strip():
        raise ControlError("'topic' names no topic ranges")
    out = []
    for entry in text.split(","):
        entry = entry.strip()
        # The topic name may not contain ':' (Kafka allows letters, digits, '.', '_', '-').
        parts = entry.split(":")
        if len(parts) not in (3, 4) or not parts[0]:
            hint = ""
            if len(parts) == 1 and _is_topic(entry):
                hint = ' (a plain topic name needs "incremental": true)'
            raise ControlError(
                f"topic range {entry[:80]!r} is not topic:partition:start[:end]{hint}"
            )
        out.append(_range(entry, parts))
    return out


def parse_sources(text: str) -> tuple[list[str], list[TopicRange]]:
    """The sources of an incremental (online) control message: ``(topics, ranges)``.

    ``text`` is comma-separated; an entry is a plain topic name (every partition of it, from
    the control message's time on) or ``topic:partition:start`` (that partition from
    ``start``). ``topic:partition:start:end``, which Kafka-ML writes with an unsupervised
    topic, is taken as its ``start``. Ranges come back empty (``end == start``).

    >>> parse_sources("digits, more:1:50, labelled:0:10:20")
    (['digits'], [TopicRange(topic='more', partition=1, start=50, end=50), \
TopicRange(topic='labelled', partition=0, start=10, end=10)])
    >>> format_sources(*parse_sources("more:1:50,digits"))
    'digits,more:1:50'
    >>> parse_sources("__consumer_offsets")
    Traceback (most recent call last):
    ...
    kafkaml_ray.ingest.control.ControlError: topic entry '__consumer_offsets': \
'__consumer_offsets' is not a data topic (Kafka topic names have up to 249 letters, digits, \
'.', '_' and '-'; '__' begins Kafka's internal ones)
    """
    if not isinstance(text, str) or not text.strip():
        raise ControlError("'topic' names no topics")
    topics: list[str] = []
    ranges: list[TopicRange] = []
    partitions: dict[str, set[int]] = {}  # each partition has one place to begin
    for entry in text.split(","):
        entry = entry.strip()
        parts = entry.split(":")
        if len(parts) == 1 and entry:
            if not _is_topic(entry):
                raise _not_a_topic(entry, entry, "topic entry")
            if entry in partitions:
                raise ControlError(f"topic entry {entry[:80]!r}: that topic is named twice")
            partitions[entry] = set()
            topics.append(entry)
        elif len(parts) in (3, 4) and parts[0]:
            r = _range(entry, parts, "topic entry")
            named = partitions.setdefault(r.topic, set())
            if r.topic in topics or r.partition in named:
                raise ControlError(f"topic entry {entry[:80]!r}: that partition is named twice")
            named.add(r.partition)
            ranges.append(TopicRange(r.topic, r.partition, r.start, r.start))
        else:
            raise ControlError(
                f"topic entry {entry[:80]!r} is not a topic name, topic:partition:start "
                "or topic:partition:start:end"
            )
    return topics, ranges


def format_sources(topics: Sequence[str], ranges: Sequence[TopicRange]) -> str:
    """The ``topic`` text of an incremental message: whole topics first, then
    ``topic:partition:start`` entries (an entry's ``end`` is not written)."""
    return ",".join([*topics, *(f"{r.topic}:{r.partition}:{r.start}" for r in ranges)])


def format_ranges(ranges: Sequence[TopicRange]) -> str:
    return ",".join(str(r) for r in ranges)


def _rate(value: Any, name: str) -> float:
    if value is None:
        return 0.0
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 <= value < 1:
        raise ControlError(f"{name} must be a number from 0 up to 1, not {value!r}")
    return float(value)


def _json(text: str | bytes, what: str) -> Any:
    try:
        return json.loads(text)
    except (ValueError, UnicodeDecodeError) as e:
        raise ControlError(f"{what} is not JSON: {e}") from None
    except RecursionError:
        raise ControlError(f"{what} is JSON nested too deeply") from None


def parse_control(
    key: bytes | None,
    value: bytes | None,
    headers: Sequence[tuple[str, bytes | None]] | None = None,
) -> ControlMessage:
    """Parse and check a control message; :class:`ControlError` says what is wrong."""
    deployment_id = decode_key(key, headers)
    if deployment_id > MAX_ID:
        raise ControlError(f"deployment id {deployment_id} is above {MAX_ID}")
    body = _json(value or b"", "the value")
    if not isinstance(body, dict):
        raise ControlError(f"the value must be a JSON object, not {type(body).__name__}")
    incremental = body.get("incremental")
    if incremental is not None and not isinstance(incremental, bool):
        raise ControlError(f"incremental must be true or false, not {str(incremental)[:40]!r}")
    topics: list[str] = []
    if incremental:
        topics, ranges = parse_sources(body.get("topic"))
    else:
        ranges = parse_ranges(body.get("topic"))
        if sum(len(r) for r in ranges) > MAX_OFFSET:
            raise ControlError(f"the ranges hold more than {MAX_OFFSET} messages")
    fmt = body.get("input_format") or "RAW"
    if not isinstance(fmt, str):
        raise ControlError(f"input_format must be RAW, AVRO or JSON, not {fmt!r}")
    config = body.get("input_config") or {}
    if isinstance(config, str):  # some clients send it as JSON text
        config = _json(config, "input_config")
    if not isinstance(config, dict):
        raise ControlError("input_config must be a JSON object")
    try:
        get_format(fmt, config)
    except InvalidInput as e:
        raise ControlError(str(e)) from None
    val, test = (
        _rate(body.get("validation_rate"), "validation_rate"),
        _rate(body.get("test_rate"), "test_rate"),
    )
    if val + test >= 1:
        raise ControlError(f"validation_rate + test_rate is {val + test:g}: nothing left to train")
    total = body.get("total_msg")
    if total is not None and (
        isinstance(total, bool) or not isinstance(total, int) or not 0 <= total <= MAX_OFFSET
    ):
        raise ControlError(f"total_msg must be a whole number >= 0, not {str(total)[:40]}")
    restrictions = body.get("dataset_restrictions") or {}
    if isinstance(restrictions, str):
        restrictions = _json(restrictions, "dataset_restrictions") if restrictions.strip() else {}
    for name in ("description", "unsupervised_topic"):
        if body.get(name) is not None and not isinstance(body.get(name), str):
            raise ControlError(f"{name} must be text, not {type(body.get(name)).__name__}")
    return ControlMessage(
        deployment_id=deployment_id,
        ranges=ranges,
        input_format=fmt.upper(),
        input_config=config,
        description=body.get("description") or "",
        validation_rate=val,
        test_rate=test,
        total_msg=total,
        dataset_restrictions=restrictions if isinstance(restrictions, dict) else {},
        unsupervised_topic=body.get("unsupervised_topic") or None,
        incremental=bool(incremental),
        topics=topics,
    )


def send_control(settings: Settings, message: dict[str, Any], deployment_id: int) -> None:
    """Send a stored control ``message`` again, naming ``deployment_id`` (a datasource
    re-sent, a reproduction): the deployment trains on the same Kafka ranges."""
    from confluent_kafka import Producer

    msg = parse_control(b"\x00", json.dumps(message).encode())
    msg.deployment_id = deployment_id
    key, value, headers = msg.to_kafka()
    producer = Producer(settings.kafka_config())
    failures: list[str] = []
    producer.produce(
        settings.control_topic,
        value,
        key,
        headers=headers,
        on_delivery=lambda err, _m: err and failures.append(str(err)),
    )
    if producer.flush(30) or failures:
        raise InvalidInput(f"the control message was not delivered: {failures or 'timeout'}")
