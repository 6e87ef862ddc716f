"""An online run's stream: its consumer, assigned to every partition of the run's topics
at known positions (given, or the first message at or after the control message's time),
taking window after window and moving its positions only as windows are trained."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from typing import Any

from kafkaml_ray.ingest.dataset import ReadError
from kafkaml_ray.train.reporter import RunSpec

__all__ = ["OnlineStream", "Source"]

logger = logging.getLogger(__name__)

#: Where a run reads from: whole topics (from ``since_ms``) and ``(topic, partition, start)``.
Source = dict[str, Any]


# -- the stream ---------------------------------------------------------------------------
def _key(topic: str, partition: int) -> str:
    return f"{topic}:{partition}"


class OnlineStream:
    """The run's consumer, assigned to every partition it reads, at known positions."""

    def __init__(self, spec: RunSpec, source: Source, resume: dict[str, int] | None):
        from confluent_kafka import Consumer

        self.consumer = Consumer(
            spec.settings.kafka_config(
                **{
                    "group.id": f"kafkaml-online-{spec.result_id}",
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                }
            )
        )
        self.positions = dict(resume or self._starts(source))
        self._assign()

    def _starts(self, source: Source) -> dict[str, int]:
        """Each partition's first offset: given, or the first at or after ``since_ms``
        (the end, when nothing came after it yet)."""
        from confluent_kafka import TopicPartition

        starts = {_key(t, p): start for t, p, start in source.get("starts", [])}
        wanted = [
            TopicPartition(t, p, int(source.get("since_ms") or 0))
            for t in source.get("topics", [])
            for p in self._partitions(t)
        ]
        # The ends first: a message written between the two look-ups is after the end read
        # before, and so is read (the end read after would skip it).
        ends = {
            _key(tp.topic, tp.partition): self.consumer.get_watermark_offsets(tp, timeout=30)[1]
            for tp in wanted
        }
        if wanted:
            for tp in self.consumer.offsets_for_times(wanted, timeout=30):
                key = _key(tp.topic, tp.partition)
                # (nothing at or after that time yet: from the end on)
                starts.setdefault(key, tp.offset if tp.offset >= 0 else ends[key])
        return starts

    def _partitions(self, topic: str, wait_s: float = 60.0) -> list[int]:
        """The topic's partitions; it may not exist yet when the control message came first
        (Kafka-ML's online sink sends it before the data)."""
        deadline = time.monotonic() + wait_s
        while True:
            found = self.consumer.list_topics(topic, timeout=10).topics.get(topic)
            if found is not None and found.error is None and found.partitions:
                return sorted(found.partitions)
            if time.monotonic() > deadline:
                raise ReadError(f"topic {topic!r} does not exist (waited {wait_s:.0f}s)")
            time.sleep(0.5)

    def _assign(self) -> None:
        from confluent_kafka import TopicPartition

        self.consumer.assign(
            [
                TopicPartition(k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]), offset)
                for k, offset in self.positions.items()
            ]
        )

    def window(
        self,
        most: int,
        seconds: float,
        idle_s: float,
        going: Callable[[], bool],
        ask_after: float = 5.0,
    ) -> list[Any]:
        """Up to ``most`` messages, or what came within ``seconds`` of the first; [] after
        ``idle_s`` without any (-1: wait on), or when ``going()`` (asked after ``ask_after``
        seconds without any, then every 5 s) turns false."""
        msgs: list[Any] = []
        started = idle_since = time.monotonic()
        asked = started - 5.0 + ask_after
        while len(msgs) < most:
            now = time.monotonic()
            if msgs and now - started >= seconds:
                break
            if not msgs and idle_s >= 0 and now - idle_since >= idle_s:
                break
            if not msgs and now - asked >= 5.0:
                asked = now
                if not going():
                    break
            for m in self.consumer.consume(num_messages=most - len(msgs), timeout=0.5):
                if m.error() is not None:
                    logger.warning("online read: %s", m.error())
                    continue
                if not msgs:
                    started = time.monotonic()
                msgs.append(m)
        return msgs

    def advance(self, msgs: list[Any]) -> dict[str, list[int]]:
        """Move the positions past ``msgs``; the ``[first, next)`` offsets they cover."""
        spans: dict[tuple[str, int], list[int]] = {}
        for m in msgs:  # (a partition's messages come in offset order)
            tp, offset = (m.topic(), m.partition()), m.offset()
            if tp in spans:
                spans[tp][1] = offset + 1
            else:
                spans[tp] = [offset, offset + 1]
        covered = {_key(*tp): span for tp, span in spans.items()}
        self.positions.update({k: span[1] for k, span in covered.items()})
        return covered

    def commit(self, positions: dict[str, int]) -> None:
        """Checkpointed positions as the group's committed offsets too (for lag tools)."""
        from confluent_kafka import TopicPartition

        parts = [
            TopicPartition(k.rsplit(":", 1)[0], int(k.rsplit(":", 1)[1]), offset)
            for k, offset in positions.items()
        ]
        try:
            self.consumer.commit(offsets=parts, asynchronous=True)
        except Exception as e:  # noqa: BLE001 - the checkpoint holds the truth
            logger.warning("online run: committing offsets: %s", e)

    def close(self) -> None:
        self.consumer.close()
