"""The embedded broker: real Kafka, real clients (confluent-kafka and kafka-python)."""

import uuid

import pytest
from confluent_kafka import Consumer, Producer

pytestmark = pytest.mark.integration


def _produce(bootstrap, topic, values):
    p = Producer({"bootstrap.servers": bootstrap})
    for v in values:
        p.produce(topic, v)
    assert p.flush(30) == 0


def _consume(bootstrap, topic, n, timeout=30):
    c = Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": uuid.uuid4().hex,
            "auto.offset.reset": "earliest",
            "enable.auto.commit": False,
        }
    )
    c.subscribe([topic])
    out = []
    import time

    deadline = time.monotonic() + timeout
    while len(out) < n and time.monotonic() < deadline:
        msg = c.poll(0.5)
        if msg is not None and not msg.error():
            out.append(msg.value())
    c.close()
    return out


def test_start_twice_is_harmless_and_status_says_where(broker):
    before = broker.status()
    again = broker.start()
    assert again.pid == before.pid and again.running
    assert again.address == broker.address and again.address.startswith("127.0.0.1:")
    assert again.version.startswith("4.")


def test_data_topics_are_kept_past_kafkas_seven_days(broker):
    """A stored datasource is re-read later: the embedded broker keeps its topics' data."""
    from confluent_kafka.admin import AdminClient, ConfigResource

    topic = f"t-{uuid.uuid4().hex[:8]}"
    _produce(broker.address, topic, [b"x"])
    admin = AdminClient({"bootstrap.servers": broker.address})
    resource = ConfigResource(ConfigResource.Type.TOPIC, topic)
    config = admin.describe_configs([resource])[resource].result(30)
    assert config["retention.ms"].value == "-1"


def test_confluent_kafka_and_kafka_python_on_the_broker(broker):
    from kafka import KafkaConsumer, KafkaProducer

    topic = f"t-{uuid.uuid4().hex[:8]}"
    _produce(broker.address, topic, [b"from-confluent"])
    kp = KafkaProducer(bootstrap_servers=broker.address)
    kp.send(topic, b"from-kafka-python").get(timeout=30)
    kp.close()
    assert _consume(broker.address, topic, 2) == [b"from-confluent", b"from-kafka-python"]
    kc = KafkaConsumer(
        topic,
        bootstrap_servers=broker.address,
        auto_offset_reset="earliest",
        consumer_timeout_ms=10000,
    )
    assert [m.value for m in kc][:2] == [b"from-confluent", b"from-kafka-python"]
    kc.close()


def test_restart_keeps_a_topics_messages(broker):
    topic = f"durable-{uuid.uuid4().hex[:8]}"
    _produce(broker.address, topic, [b"a", b"b", b"c"])
    old_pid = broker.status().pid
    assert broker.stop()
    assert not broker.status().running
    assert not broker.stop()  # stopping a stopped broker is harmless
    broker.start()
    assert broker.status().pid != old_pid
    assert _consume(broker.address, topic, 3) == [b"a", b"b", b"c"]


def test_a_taken_port_is_a_clear_error(broker, tmp_path):
    from kafkaml_ray.broker import EmbeddedKafka
    from kafkaml_ray.errors import Unavailable

    other = EmbeddedKafka(broker.settings.model_copy(update={"home": tmp_path}))
    with pytest.raises(Unavailable, match="KAFKAML_BROKER_PORT"):
        other.start()


def test_without_java_the_message_says_what_to_install(tmp_path, monkeypatch):
    from kafkaml_ray.broker import EmbeddedKafka
    from kafkaml_ray.errors import Unavailable
    from kafkaml_ray.settings import Settings
    from tests.conftest import free_ports

    monkeypatch.setenv("PATH", str(tmp_path))  # no java, no mvn
    monkeypatch.delenv("JAVA_HOME", raising=False)
    kafka = EmbeddedKafka(Settings(home=tmp_path, broker_port=free_ports(2)))
    with pytest.raises(Unavailable, match="Java 17.*KAFKAML_BOOTSTRAP"):
        kafka.start()
