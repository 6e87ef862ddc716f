"""Kafka ranges into a Ray Dataset of decoded samples, and its train/validation/test split.

One Ray task reads each ``topic:partition:start:end`` range with its own consumer
(``assign``, no consumer group), decodes the messages in batches into numpy arrays and
returns one block; the blocks form the Dataset. Reads are bounded and never hang: a range
beyond the partition's end, a deleted topic, or a broker that stops answering for
``stall_timeout_s`` ends the read with a :class:`ReadError` naming the range.

Columns: ``data`` (one sample), ``label`` (when the format has labels), and ``partition``,
``offset``, ``timestamp`` (kept for the ordered split; `split` drops them).

Split sizes (``n`` messages read): ``n_test = floor(test_rate * n)``,
``n_val = floor(validation_rate * n)``, ``n_train = n - n_val - n_test``. The ordered split
(default) sorts by (timestamp, partition, offset): training data first, test data newest.
With ``shuffle_seed`` the samples are shuffled with that seed first.
"""

from __future__ import annotations

import logging
import math
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Any, Literal

import numpy as np

from kafkaml_ray.errors import InvalidInput, KafkaMLError
from kafkaml_ray.ingest.control import TopicRange
from kafkaml_ray.ingest.formats import get_format

__all__ = [
    "read_ranges",
    "expired_streams",
    "split_dataset",
    "StreamData",
    "ReadError",
    "OnMalformed",
    "BULK_READ",
    "split_sizes",
]

logger = logging.getLogger(__name__)
OnMalformed = Literal["fail", "skip"]
_CHUNK = 10_000
#: A bulk reader's librdkafka settings. With the default ``fetch.queue.backoff.ms`` (1 s) a
#: consumer that empties its prefetch queue (``queued.min.messages``, 100,000) faster than a
#: second waits out the rest of that second for its next fetch: 200,000 messages read in
#: 1.2-1.3 s instead of 0.4-0.5 s (`benchmarks.ingest`, whose plain loop uses these too).
BULK_READ = {"fetch.queue.backoff.ms": 10}


class ReadError(KafkaMLError):
    """A range that could not be read (or held malformed messages, with ``on_malformed="fail"``)."""


@dataclass
class StreamData:
    """What `read_ranges` read: the Dataset, its size, and the malformed messages skipped."""

    dataset: Any  # ray.data.Dataset
    count: int
    malformed: int = 0
    errors: list[str] = field(default_factory=list)  # the first few skipped, for people


class _Unanswered(ReadError):
    """The broker did not answer: nothing is known about the range."""


def _check_range(consumer: Any, rng: TopicRange, timeout: float) -> None:
    """Raise a :class:`ReadError` when Kafka does not hold all of ``rng``: its topic is gone,
    retention deleted its start, or it ends beyond what was written."""
    from confluent_kafka import KafkaError, KafkaException, TopicPartition

    where = f"{rng.topic}:{rng.partition}"
    try:
        low, high = consumer.get_watermark_offsets(
            TopicPartition(rng.topic, rng.partition), timeout=timeout
        )
    except KafkaException as e:
        err = e.args[0]
        if err.code() in (
            KafkaError.UNKNOWN_TOPIC_OR_PART,
            KafkaError._UNKNOWN_PARTITION,
            KafkaError._UNKNOWN_TOPIC,
        ):
            raise ReadError(f"{where} does not exist (deleted topic?)") from None
        raise _Unanswered(f"cannot read {where}: {err.str()}") from None
    if rng.end > high:
        raise ReadError(
            f"{where} ends at offset {high}, but the range asks for {rng.start}..{rng.end}: "
            "the offsets beyond its end were never written"
        )
    if rng.start < low:
        raise ReadError(
            f"{where} starts at offset {low} now, but the range asks for {rng.start}.."
            f"{rng.end}: those messages were deleted (retention)"
        )


def expired_streams(
    kafka_config: Mapping[str, Any],
    streams: Mapping[Any, Sequence[TopicRange]],
    timeout: float = 5.0,
) -> dict[Any, str]:
    """Which of ``streams`` (ranges by any key, e.g. a datasource id) Kafka no longer holds
    in full, and why. Streams that cannot be checked (the broker does not answer) are left
    out: nothing is said about them."""
    from confluent_kafka import Consumer

    consumer = Consumer({**kafka_config, "group.id": "kafkaml-reader", "enable.auto.commit": False})
    gone: dict[Any, str] = {}
    try:
        for key, ranges in streams.items():
            for rng in ranges:
                if not len(rng):
                    continue
                try:
                    _check_range(consumer, rng, timeout)
                except _Unanswered:
                    return gone
                except ReadError as e:
                    gone[key] = str(e)
                    break
    finally:
        consumer.close()
    return gone


def _read_range(
    kafka_config: Mapping[str, Any],
    rng: TopicRange,
    input_format: str,
    input_config: Mapping[str, Any],
    on_malformed: OnMalformed,
    stall_timeout_s: float,
) -> tuple[Any, dict[str, Any]]:
    """Read one range and decode it; runs as a Ray task. Returns (block, stats)."""
    from confluent_kafka import Consumer, KafkaError, KafkaException, TopicPartition
    from ray.data.block import BlockAccessor

    fmt = get_format(input_format, input_config)
    where = f"{rng.topic}:{rng.partition}"
    try:
        consumer = Consumer(
            {
                **BULK_READ,
                **kafka_config,
                "group.id": "kafkaml-reader",  # required by librdkafka; nothing is committed
                "enable.auto.commit": False,
                "enable.partition.eof": True,
                # Offsets deleted under the read are an error, not a silent jump ahead.
                "auto.offset.reset": "error",
                "socket.timeout.ms": int(stall_timeout_s * 1000),
                "session.timeout.ms": max(6000, int(stall_timeout_s * 1000)),
            }
        )
    except KafkaException as e:
        raise ReadError(f"invalid Kafka consumer settings: {e.args[0].str()}") from None
    chunks: list[Any] = []
    meta: dict[str, list[np.ndarray]] = {"partition": [], "offset": [], "timestamp": []}
    bad, errors, done = 0, [], 0
    try:
        _check_range(consumer, rng, stall_timeout_s)
        if len(rng):
            consumer.assign([TopicPartition(rng.topic, rng.partition, rng.start)])
        position, last_progress = rng.start, time.monotonic()
        while position < rng.end:
            msgs = consumer.consume(num_messages=min(_CHUNK, rng.end - position), timeout=1.0)
            values, keys, offsets, stamps = [], [], [], []
            eof = False
            for m in msgs:
                err = m.error()
                if err is not None:
                    if err.code() == KafkaError._PARTITION_EOF:
                        eof = True
                        continue
                    if err.code() == KafkaError._AUTO_OFFSET_RESET:
                        raise ReadError(
                            f"{where}: offset {position} of {rng.start}..{rng.end} was deleted "
                            "while it was read (retention)"
                        )
                    if err.fatal() or err.code() in (
                        KafkaError.UNKNOWN_TOPIC_OR_PART,
                        KafkaError._UNKNOWN_PARTITION,
                    ):
                        raise ReadError(f"reading {where} failed at offset {position}: {err.str()}")
                    continue  # transient: retried by librdkafka
                off = m.offset()
                if off >= rng.end:
                    continue
                values.append(m.value())
                keys.append(m.key())
                offsets.append(off)
                stamps.append(m.timestamp()[1])
            if values:
                position = offsets[-1] + 1
                last_progress = time.monotonic()
                batch = fmt.decode_batch(values, keys, on_error="skip")
                if batch.errors:
                    first = batch.errors[0]
                    if on_malformed == "fail":
                        raise ReadError(
                            f"malformed message at {where} offset {offsets[first.index]}: "
                            f"{first} (on_malformed='skip' leaves such messages out)"
                        )
                    bad += len(batch.errors)
                    errors += [f"{where}@{offsets[e.index]}: {e}" for e in batch.errors[:3]]
                idx = batch.index
                chunks.append(batch)
                meta["partition"].append(np.full(len(idx), rng.partition, dtype=np.int32))
                meta["offset"].append(np.asarray(offsets, dtype=np.int64)[idx])
                meta["timestamp"].append(np.asarray(stamps, dtype=np.int64)[idx])
                done += len(values)
            elif eof:
                break  # offsets left are transaction markers or compacted away
            elif time.monotonic() - last_progress > stall_timeout_s:
                raise ReadError(
                    f"the broker sent nothing for {stall_timeout_s:.0f}s while reading {where} "
                    f"at offset {position} of {rng.start}..{rng.end} (is it down?)"
                )
    finally:
        consumer.close()
    columns: dict[str, np.ndarray] = {}
    if chunks:
        columns["data"] = np.concatenate([c.data for c in chunks])
        if fmt.has_labels:
            columns["label"] = np.concatenate([c.labels for c in chunks])
    else:
        columns["data"] = np.empty((0,), dtype=np.float32)
        if fmt.has_labels:
            columns["label"] = np.empty((0,), dtype=np.int64)
    for k, parts in meta.items():
        columns[k] = np.concatenate(parts) if parts else np.empty((0,), dtype=np.int64)
    stats = {"read": done, "kept": len(columns["data"]), "malformed": bad, "errors": errors}
    return BlockAccessor.batch_to_block(columns), stats


#: The most messages one read task holds: a large range is read by several tasks.
MAX_TASK_MESSAGES = 100_000


def split_range(rng: TopicRange, most: int = MAX_TASK_MESSAGES) -> list[TopicRange]:
    """``rng`` in consecutive pieces of at most ``most`` messages.

    >>> [str(r) for r in split_range(TopicRange("d", 0, 5, 25), most=8)]
    ['d:0:5:13', 'd:0:13:21', 'd:0:21:25']
    """
    return [
        TopicRange(rng.topic, rng.partition, start, min(start + most, rng.end))
        for start in range(rng.start, rng.end, most)
    ] or [rng]


def read_ranges(
    kafka_config: Mapping[str, Any],
    ranges: Sequence[TopicRange],
    input_format: str,
    input_config: Mapping[str, Any],
    on_malformed: OnMalformed = "fail",
    stall_timeout_s: float = 30.0,
    waiting: Callable[[str | None], None] | None = None,
) -> StreamData:
    """Read ``ranges`` into a Ray Dataset, decoded in Ray tasks: one per range, or per
    `MAX_TASK_MESSAGES` of a larger one.

    ``kafka_config`` holds librdkafka settings (``Settings.kafka_config()``).
    ``on_malformed="fail"`` ends the read with a :class:`ReadError` at the first malformed
    message; ``"skip"`` leaves malformed messages out and counts them. ``waiting`` is told
    what the read tasks wait for while Ray cannot place them (and None once they run).
    """
    import ray

    if on_malformed not in ("fail", "skip"):
        raise InvalidInput(f"on_malformed must be 'fail' or 'skip', not {on_malformed!r}")
    get_format(input_format, input_config)  # a bad config fails here, not in every task
    ranges = [p for r in ranges if len(r) for p in split_range(r)] or list(ranges[:1])
    if not ranges:
        raise InvalidInput("no topic ranges to read")
    task = ray.remote(num_cpus=1, num_returns=2, max_retries=0)(_read_range)
    refs = [
        task.remote(
            dict(kafka_config), r, input_format, dict(input_config), on_malformed, stall_timeout_s
        )
        for r in ranges
    ]
    blocks, stats_refs = [b for b, _ in refs], [s for _, s in refs]
    try:
        if waiting is None:
            stats = ray.get(stats_refs)
        else:
            from kafkaml_ray._private.rayutil import get_saying_why

            stats = get_saying_why(stats_refs, {"CPU": 1.0}, waiting)
    except ray.exceptions.RayTaskError as e:
        cause = e.cause
        if isinstance(cause, KafkaMLError):
            raise ReadError(str(cause)) from None
        raise ReadError(f"reading the stream failed: {type(cause).__name__}: {cause}") from None
    count = sum(s["kept"] for s in stats)
    errors = [msg for s in stats for msg in s["errors"]][:10]
    return StreamData(
        dataset=ray.data.from_arrow_refs(blocks),
        count=count,
        malformed=sum(s["malformed"] for s in stats),
        errors=errors,
    )


#: Streams up to this size are sorted for the ordered split in one task.
_SORT_IN_ONE_TASK_BYTES = 2 * 1024**3


def _sort_blocks(*blocks):
    import pyarrow as pa

    table = pa.concat_tables(blocks) if len(blocks) > 1 else blocks[0]
    return table.sort_by(
        [("timestamp", "ascending"), ("partition", "ascending"), ("offset", "ascending")]
    )


def split_sizes(n: int, validation_rate: float, test_rate: float) -> tuple[int, int, int]:
    """``(n_train, n_val, n_test)`` for ``n`` samples (see the module docstring), exactly:
    each rate is taken as the decimal it was written as, not as its binary float.

    >>> split_sizes(100, 0.1, 0.29)  # (0.29 * 100 is 28.999999999999996 in floats)
    (61, 10, 29)
    """
    n_test = math.floor(Fraction(repr(float(test_rate))) * n)
    n_val = math.floor(Fraction(repr(float(validation_rate))) * n)
    return n - n_val - n_test, n_val, n_test


def split_dataset(
    data: StreamData,
    validation_rate: float,
    test_rate: float,
    shuffle_seed: int | None = None,
) -> tuple[Any, Any, Any]:
    """Train, validation and test Datasets of exactly `split_sizes` rows each."""
    import ray

    n_train, n_val, _ = split_sizes(data.count, validation_rate, test_rate)
    ds = data.dataset
    if shuffle_seed is None and ds.size_bytes() <= _SORT_IN_ONE_TASK_BYTES:
        # One task sorting the Arrow blocks together: seconds faster than a distributed sort
        # (which starts map and reduce tasks) for anything that fits one worker's memory.
        sort = ray.remote(num_cpus=1, max_retries=0)(_sort_blocks)
        ds = ray.data.from_arrow_refs([sort.remote(*ds.to_arrow_refs())])
    elif shuffle_seed is None:
        ds = ds.sort(["timestamp", "partition", "offset"])
    else:
        ds = ds.random_shuffle(seed=shuffle_seed)
    keep = [c for c in ("data", "label") if c in ds.columns()]
    ds = ds.select_columns(keep).materialize()
    train, val, test = ds.split_at_indices([n_train, n_train + n_val])
    return train, val, test
