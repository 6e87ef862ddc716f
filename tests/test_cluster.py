"""Cluster facts on the real broker and Ray: topics and offsets, groups and lag, resources."""

from __future__ import annotations

import uuid

import pytest

from kafkaml_ray import cluster
from kafkaml_ray.errors import Unavailable

pytestmark = pytest.mark.integration


@pytest.fixture
def topic(broker, settings):
    """A new topic with 2 partitions: 3 messages in partition 0, 2 in partition 1."""
    from confluent_kafka import Producer
    from confluent_kafka.admin import AdminClient, NewTopic

    name = f"admin-{uuid.uuid4().hex[:8]}"
    client = AdminClient(settings.kafka_config())  # kept alive until the topic exists
    client.create_topics([NewTopic(name, 2, 1)])[name].result(30)
    producer = Producer(settings.kafka_config())
    for partition, count in ((0, 3), (1, 2)):
        for i in range(count):
            producer.produce(name, f"m{i}".encode(), partition=partition)
    assert producer.flush(30) == 0
    return name


def test_topics_with_partitions_and_watermarks(settings, topic):
    found = {t.name: t for t in cluster.list_topics(settings)}
    t = found[topic]
    assert [(p.partition, p.low, p.high) for p in t.partitions] == [(0, 0, 3), (1, 0, 2)]
    assert (t.messages, t.end_offsets) == (5, {0: 3, 1: 2})
    assert not any(name.startswith("__") for name in found)


def test_consumer_group_and_its_lag(settings, topic):
    from confluent_kafka import Consumer, TopicPartition

    group = f"g-{topic}"
    consumer = Consumer(settings.kafka_config(**{"group.id": group}))
    try:
        consumer.commit(
            offsets=[TopicPartition(topic, 0, 1), TopicPartition(topic, 1, 2)],
            asynchronous=False,
        )
    finally:
        consumer.close()
    assert cluster.consumer_lag(settings, group) == {(topic, 0): 2, (topic, 1): 0}
    groups = {g.group_id: g for g in cluster.consumer_groups(settings)}
    assert groups[group].members == 0
    assert groups[group].state == "EMPTY"


def test_a_broker_that_does_not_answer_is_one_line(settings):
    silent = settings.model_copy(update={"bootstrap": "127.0.0.1:1"})
    with pytest.raises(Unavailable, match=r"^Kafka at 127\.0\.0\.1:1 did not answer"):
        cluster.list_topics(silent, timeout=2)


def test_ray_resources(ray_cluster, settings):
    resources = {r.name: r for r in cluster.ray_resources(settings)}
    assert resources["CPU"].total == 4
    assert 0 <= resources["CPU"].used <= 4
    assert not any(name.startswith("node:") for name in resources)
