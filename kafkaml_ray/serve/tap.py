"""Reading an inference's latest predictions (or dead letters) without joining its consumer
group: the CLI's ``infer tap`` and the panel's live view (`kafkaml_ray.api.inference`)."""

from __future__ import annotations

import time

from kafkaml_ray.ingest.prediction import prediction_values
from kafkaml_ray.schemas import Prediction
from kafkaml_ray.settings import Settings

__all__ = ["tap", "read_prediction"]


def tap(
    settings: Settings, topic: str, group: str, n: int, dead_letters: bool, timeout: float
) -> list[Prediction]:
    """The latest ``n`` messages of ``topic`` (an output topic or its ``.dlq``), read with
    consumer ``group`` and nothing committed."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        settings.kafka_config(
            **{
                "group.id": group,
                "enable.auto.commit": False,
                "enable.partition.eof": True,
            }
        )
    )
    try:
        md = consumer.list_topics(topic, timeout=timeout).topics.get(topic)
        if md is None or md.error is not None:
            return []
        tps, wanted = [], 0
        for p in md.partitions:
            low, high = consumer.get_watermark_offsets(TopicPartition(topic, p), timeout)
            start = max(low, high - n)
            if high > start:
                tps.append(TopicPartition(topic, p, start))
                wanted += high - start
        if not tps:
            return []
        consumer.assign(tps)
        out: list[Prediction] = []
        deadline = time.monotonic() + timeout
        eofs = 0
        while len(out) < wanted and eofs < len(tps) and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=wanted, timeout=0.5):
                if m.error() is not None:
                    eofs += 1
                    continue
                out.append(read_prediction(m, dead_letters))
        return sorted(out, key=lambda p: p.timestamp_ms)[-n:]
    finally:
        consumer.close()


def read_prediction(m, dead_letter: bool) -> Prediction:
    """One output message as read by a tap. Outputs carry their input's headers, which may
    hold an ``error`` of the sender's own: only a dead letter's last ``error`` is ours."""
    headers = {k: (v or b"").decode("utf-8", "replace") for k, v in (m.headers() or [])}
    values, error = None, headers.get("error") if dead_letter else None
    if not dead_letter:
        try:
            values = prediction_values(m.value())
        except ValueError as e:
            error = str(e)
    key = m.key()
    return Prediction(
        partition=m.partition(),
        offset=m.offset(),
        timestamp_ms=m.timestamp()[1],
        key=None if key is None else key.decode("utf-8", "replace"),
        values=values,
        error=error,
        headers=headers,
    )
