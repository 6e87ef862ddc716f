"""The Cluster page: the broker's topics and Ray."""

from __future__ import annotations

import uuid

import pytest

from tests.ui.pages import (
    table,
)


@pytest.mark.integration
def test_cluster_shows_a_topic_of_the_broker_and_ray(broker, ray_cluster, settings, open_page):
    from confluent_kafka import Producer

    topic = f"ui-{uuid.uuid4().hex[:8]}"
    producer = Producer(settings.kafka_config())
    producer.produce(topic, b"one")
    producer.produce(topic, b"two")
    assert producer.flush(30) == 0

    at = open_page("cluster")
    assert not at.warning, [w.value for w in at.warning]
    topics = {r["topic"]: r for r in table(at, "topic")}
    assert (topics[topic]["partitions"], topics[topic]["end offsets"]) == (1, "0: 2")
    parts = {r["part"]: r["state"] for r in table(at, "part")}
    assert parts["kafka"] == parts["ray"] == "running"
    assert at.metric[0].label == "CPU in use"
    assert at.metric[0].value.endswith("of 4")
