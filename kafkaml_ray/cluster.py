"""Facts about the cluster for the control panel and scripts: Kafka topics with their
offsets, consumer groups with their lag, and Ray's resources.

Every function reads; none changes the cluster. A broker or Ray that does not answer raises
:class:`~kafkaml_ray.errors.Unavailable` with a one-line message.

>>> from kafkaml_ray.cluster import PartitionInfo
>>> PartitionInfo(partition=0, leader=1, low=5, high=12).messages
7
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

from kafkaml_ray.errors import Unavailable
from kafkaml_ray.settings import Settings

__all__ = [
    "PartitionInfo",
    "TopicInfo",
    "GroupInfo",
    "ResourceUse",
    "list_topics",
    "consumer_groups",
    "consumer_lag",
    "ray_resources",
]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class PartitionInfo:
    """One partition: its leader broker and its low and high watermarks (end offset)."""

    partition: int
    leader: int
    low: int
    high: int

    @property
    def messages(self) -> int:
        """Messages kept in the partition (high minus low watermark)."""
        return self.high - self.low


@dataclass(frozen=True)
class TopicInfo:
    """A topic and its partitions, in partition order."""

    name: str
    partitions: tuple[PartitionInfo, ...]

    @property
    def messages(self) -> int:
        return sum(p.messages for p in self.partitions)

    @property
    def end_offsets(self) -> dict[int, int]:
        """The high watermark of each partition."""
        return {p.partition: p.high for p in self.partitions}


@dataclass(frozen=True)
class GroupInfo:
    """A consumer group: its state (``STABLE``, ``EMPTY``, ...) and how many members it has."""

    group_id: str
    state: str
    members: int


@dataclass(frozen=True)
class ResourceUse:
    """One Ray resource (``CPU``, ``GPU``, ``memory`` in bytes, ...) of the whole cluster."""

    name: str
    total: float
    available: float

    @property
    def used(self) -> float:
        return self.total - self.available


def _admin(settings: Settings):
    from confluent_kafka.admin import AdminClient

    return AdminClient(settings.kafka_config())


def _unavailable(settings: Settings, e: Exception) -> Unavailable:
    reason = e.args[0].str() if e.args and hasattr(e.args[0], "str") else str(e)
    return Unavailable(f"Kafka at {settings.bootstrap_servers} did not answer: {reason}")


def _offsets(admin, partitions: list, spec, timeout: float) -> dict[tuple[str, int], int]:
    from confluent_kafka import TopicPartition

    if not partitions:
        return {}
    futures = admin.list_offsets(
        {TopicPartition(t, p): spec for t, p in partitions}, request_timeout=timeout
    )
    return {(tp.topic, tp.partition): f.result().offset for tp, f in futures.items()}


def list_topics(
    settings: Settings, internal: bool = False, timeout: float = 10.0
) -> list[TopicInfo]:
    """The cluster's topics by name, each partition with its low and high watermarks.

    ``internal``: also list Kafka's own topics (``__consumer_offsets``, ...).
    """
    from confluent_kafka import KafkaException
    from confluent_kafka.admin import OffsetSpec

    admin = _admin(settings)
    try:
        md = admin.list_topics(timeout=timeout)
        topics = {
            name: t
            for name, t in md.topics.items()
            if t.error is None and (internal or not name.startswith("__"))
        }
        keys = [(name, p) for name, t in topics.items() for p in t.partitions]
        low = _offsets(admin, keys, OffsetSpec.earliest(), timeout)
        high = _offsets(admin, keys, OffsetSpec.latest(), timeout)
    except KafkaException as e:
        raise _unavailable(settings, e) from None
    return [
        TopicInfo(
            name,
            tuple(
                PartitionInfo(p, t.partitions[p].leader, low[name, p], high[name, p])
                for p in sorted(t.partitions)
            ),
        )
        for name, t in sorted(topics.items())
    ]


def consumer_groups(settings: Settings, timeout: float = 10.0) -> list[GroupInfo]:
    """The cluster's consumer groups by id, with their state and number of members."""
    from confluent_kafka import KafkaException

    admin = _admin(settings)
    try:
        listed = admin.list_consumer_groups(request_timeout=timeout).result().valid
        ids = sorted(g.group_id for g in listed)
        described = admin.describe_consumer_groups(ids, request_timeout=timeout) if ids else {}
        groups = [described[i].result() for i in ids]
    except KafkaException as e:
        raise _unavailable(settings, e) from None
    return [GroupInfo(g.group_id, g.state.name, len(g.members)) for g in groups]


def consumer_lag(
    settings: Settings, group_id: str, timeout: float = 10.0
) -> dict[tuple[str, int], int]:
    """Messages a consumer group has still to read: end offset minus committed offset, for
    each ``(topic, partition)`` where the group committed an offset."""
    from confluent_kafka import ConsumerGroupTopicPartitions, KafkaException
    from confluent_kafka.admin import OffsetSpec

    admin = _admin(settings)
    try:
        request = [ConsumerGroupTopicPartitions(group_id)]
        found = admin.list_consumer_group_offsets(request, request_timeout=timeout)
        committed = {
            (tp.topic, tp.partition): tp.offset
            for tp in found[group_id].result().topic_partitions
            if tp.offset >= 0
        }
        high = _offsets(admin, list(committed), OffsetSpec.latest(), timeout)
    except KafkaException as e:
        raise _unavailable(settings, e) from None
    return {key: max(high[key] - offset, 0) for key, offset in sorted(committed.items())}


def ray_resources(settings: Settings) -> list[ResourceUse]:
    """Ray's resources over the whole cluster, total and available (``node:*`` markers
    left out), connecting to the configured cluster or the local head; never starts one."""
    import ray

    from kafkaml_ray._private.rayutil import ensure_ray, ray_address

    if not ray.is_initialized():
        if ray_address(settings) is None:
            raise Unavailable(
                "Ray is not running: start the stack with 'kafkaml-ray up' or set RAY_ADDRESS"
            )
        try:
            ensure_ray(settings)
        except (ConnectionError, RuntimeError) as e:
            raise Unavailable(f"Ray did not answer: {e}") from None
    total, available = ray.cluster_resources(), ray.available_resources()
    return [
        ResourceUse(name, float(total[name]), float(available.get(name, 0.0)))
        for name in sorted(total)
        if not name.startswith("node:")
    ]
