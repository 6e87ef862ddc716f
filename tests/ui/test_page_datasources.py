"""The Datasources page: list and re-send."""

from __future__ import annotations

import json
import uuid

from tests.ui.pages import (
    button,
    seed_training,
    shown,
    table,
)


def _hold_in_kafka(settings, topic: str, n: int) -> None:
    """At least ``n`` messages in partition 0 of ``topic`` (what a seeded range names)."""
    from confluent_kafka import Consumer, Producer, TopicPartition

    consumer = Consumer(settings.kafka_config(**{"group.id": uuid.uuid4().hex}))
    try:
        high = consumer.get_watermark_offsets(TopicPartition(topic, 0), timeout=10)[1]
    except Exception:  # noqa: BLE001 - no such topic yet
        high = 0
    consumer.close()
    producer = Producer(settings.kafka_config())
    for _ in range(max(0, n - high)):
        producer.produce(topic, b"\0" * 256, b"\0", partition=0)
    producer.flush(30)


def test_datasources_list_and_resend_to_another_deployment(broker, client, settings, open_page):
    from confluent_kafka import Consumer

    from kafkaml_ray.store import Datasource, DatasourceStatus

    ids = seed_training(client)
    _hold_in_kafka(settings, "digits", 1797)  # the seeded stream's data, so not expired
    again = client.deploy_training(ids["configuration"], kwargs="epochs=2")
    with client.store.session() as s:
        s.add(
            Datasource(
                source_topic=settings.control_topic,
                source_partition=0,
                source_offset=99,
                status=DatasourceStatus.REFUSED,
                error="topic range 'digits:x:0:10' has a part that is not a number",
                message={"topic": "digits:x:0:10"},
            )
        )
    at = open_page("datasources")
    rows = {r["datasource"]: r for r in table(at, "ranges")}
    ds = rows[ids["datasource"]]
    assert (ds["ranges"], ds["messages"], ds["skipped (malformed)"]) == (
        "digits[0] 0-1797",
        1797,
        0,
    )
    assert (ds["status"], ds["deployment"], ds["format"]) == ("accepted", ids["deployment"], "RAW")
    refused = "Refused: topic range 'digits:x:0:10' has a part that is not a number"
    assert [shown(e.value) for e in at.error] == [refused]  # the newest is shown first
    assert "\\:" in at.error[0].value  # its text is escaped: shown literally, not as Markdown

    assert at.selectbox(key="ds_deployment").value == again.id  # the waiting one first
    button(at, "Re-send").click().run()
    assert not at.exception and [shown(e.value) for e in at.error] == [refused]
    assert at.success[0].value == (
        f"Re-sent datasource {ids['datasource']} to deployment {again.id}: it trains when "
        "the control listener reads it."
    )
    consumer = Consumer(
        settings.kafka_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([settings.control_topic])
    try:
        message = None
        for _ in range(60):
            message = consumer.poll(1.0)
            if message is not None and not message.error():
                break
        assert message is not None and not message.error()
        assert int.from_bytes(message.key(), "big") == again.id
        assert json.loads(message.value())["topic"] == "digits:0:0:1797"
    finally:
        consumer.close()


def test_datasources_resend_without_kafka_says_so(client, open_page, no_backend):
    seed_training(client)
    at = open_page("datasources")
    button(at, "Re-send").click().run()
    assert at.error[0].value.startswith("Cannot send the control message: kafka is not running")
    assert not at.exception
