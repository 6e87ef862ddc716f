"""The embedded Apache Kafka broker (KRaft, single node, on 127.0.0.1): `EmbeddedKafka` and
`BrokerStatus`, from :mod:`kafkaml_ray.broker.embedded`.

This directory also holds the broker's package data: ``pom.xml`` (the Kafka version and the
jars Maven resolves) and ``log4j2.properties``.
"""

from kafkaml_ray.broker.embedded import BrokerStatus, EmbeddedKafka

__all__ = ["EmbeddedKafka", "BrokerStatus"]
