"""The control listener: one consumer-group reader of the control topic.

It stores every control message as a datasource exactly once, also across its own restarts
and re-deliveries (where the message was read is a unique key: the Kafka cluster's id, the
control topic's id and name, the partition and the offset, so a recreated topic or another
cluster behind the same address is not taken for a re-delivery; its offset is committed
only after the datasource is stored and handed over), records refused
messages with their reason, and hands each datasource to the training deployment it names
through a *handler* ``handler(settings, datasource_id)``. Ids that name no deployment are
recorded as ``unknown_deployment``; nothing stops the stream.

`start_listener` runs it as a detached Ray actor (restarted by Ray if it dies), which is
what ``kafkaml-ray up`` does.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable
from typing import Any

from sqlalchemy import select
from sqlalchemy.exc import (
    IntegrityError,
    InterfaceError,
    OperationalError,
    SQLAlchemyError,
)

from kafkaml_ray.ingest.control import ControlError, parse_control
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import Datasource, DatasourceStatus, Store, TrainingDeployment

__all__ = [
    "ControlListener",
    "Handler",
    "start_listener",
    "stop_listener",
    "listener_status",
    "LISTENER_NAME",
    "GROUP_ID",
]

logger = logging.getLogger(__name__)

#: What the listener calls with each accepted datasource: whoever starts the listener passes
#: it (the local stack passes `kafkaml_ray.train.launch.on_datasource`, which starts its
#: training); None only stores the datasources.
Handler = Callable[[Settings, int], None]
LISTENER_NAME = "control-listener"
GROUP_ID = "kafkaml-control-listener"


class ControlListener:
    """Reads control messages and stores them; ``poll()`` processes one batch."""

    def __init__(
        self,
        settings: Settings,
        handler: Handler | None,
        group_id: str = GROUP_ID,
    ):
        from confluent_kafka import Consumer
        from confluent_kafka.admin import AdminClient

        self.settings = settings
        self.store = Store.for_url(settings.db_url)
        self.handler = handler
        self.consumer = Consumer(
            settings.kafka_config(
                **{
                    "group.id": group_id,
                    "enable.auto.commit": False,
                    "auto.offset.reset": "earliest",
                    "allow.auto.create.topics": True,
                    # A listener that died (Ray restarts it) holds its partition until
                    # the broker misses its heartbeats: 10 s, not librdkafka's 45 s.
                    "session.timeout.ms": 10000,
                    "heartbeat.interval.ms": 2000,
                }
            )
        )
        self._admin = AdminClient(settings.kafka_config())
        self._ensure_topic()
        self.cluster_id, self.topic_id = "", ""
        self._identify()
        self.consumer.subscribe([settings.control_topic], on_assign=lambda *_: self._identify())
        self.processed = 0

    def _identify(self) -> None:
        """Read the cluster's id and the control topic's id (again on each assignment: the
        topic may have been deleted and created again meanwhile)."""
        from confluent_kafka import TopicCollection

        topic = self.settings.control_topic
        try:
            cluster = self.consumer.list_topics(topic, timeout=10).cluster_id
            found = self._admin.describe_topics(TopicCollection([topic]), request_timeout=10)
            self.cluster_id, self.topic_id = cluster or "", str(found[topic].result(15).topic_id)
        except Exception as e:  # noqa: BLE001 - keep the ids known; the next assignment retries
            logger.warning("control topic %s: cannot read its ids: %s", topic, e)

    def _ensure_topic(self) -> None:
        from confluent_kafka.admin import NewTopic

        admin = self._admin
        if self.settings.control_topic not in admin.list_topics(timeout=10).topics:
            futures = admin.create_topics([NewTopic(self.settings.control_topic, 1)])
            for f in futures.values():
                try:
                    f.result(10)
                except Exception as e:  # noqa: BLE001 - created meanwhile by someone else
                    logger.info("control topic: %s", e)

    def poll(self, timeout: float = 1.0) -> int:
        """Process the control messages that arrive within ``timeout``; return how many.

        Every message is stored, accepted or refused with its reason, before its offset is
        committed. When one cannot be stored (the store is down), the consumer seeks back to
        it and the error propagates: it and the messages after it are read again."""
        from confluent_kafka import TopicPartition

        msgs = self.consumer.consume(num_messages=100, timeout=timeout)
        done = 0
        for msg in msgs:
            if msg.error() is not None:
                logger.warning("control topic: %s", msg.error())
                continue
            try:
                self.handle(
                    msg.topic(),
                    msg.partition(),
                    msg.offset(),
                    msg.key(),
                    msg.value(),
                    msg.headers(),
                    msg.timestamp()[1],
                )
            except BaseException:
                self.consumer.seek(TopicPartition(msg.topic(), msg.partition(), msg.offset()))
                self.processed += done
                raise
            self.consumer.commit(message=msg, asynchronous=False)
            done += 1
        self.processed += done
        return done

    def handle(
        self,
        topic: str,
        partition: int,
        offset: int,
        key: bytes | None,
        value: bytes | None,
        headers: list | None,
        timestamp: int | None = None,
    ) -> int:
        """Store one control message (once) and hand it over; return the datasource id.
        ``timestamp`` (Kafka's, in ms) is where an online stream starts."""
        row = self._store(topic, partition, offset, key, value, headers, timestamp)
        if row.status == DatasourceStatus.RECEIVED:
            self._hand_over(row.id)
        return row.id

    def _store(self, topic, partition, offset, key, value, headers, timestamp) -> Datasource:
        where = {
            "source_cluster": self.cluster_id,
            "source_topic_id": self.topic_id,
            "source_topic": topic,
            "source_partition": partition,
            "source_offset": offset,
        }
        row = Datasource(
            **where,
            source_timestamp=timestamp if timestamp and timestamp > 0 else None,
            status=DatasourceStatus.RECEIVED,
        )
        try:
            msg = parse_control(key, value, headers)
        except Exception as e:  # noqa: BLE001 - any unreadable message is refused, with why
            why = _text(str(e) if isinstance(e, ControlError) else f"unreadable: {_why(e)}")
            row.status, row.error = DatasourceStatus.REFUSED, why
            row.message = _raw(key, value)
            logger.warning("refused control message at %s:%d:%d: %s", topic, partition, offset, why)
        else:
            row.deployment_id = msg.deployment_id
            row.topic = msg.value()["topic"]
            row.input_format, row.input_config = msg.input_format, msg.input_config
            row.description = msg.description
            row.validation_rate, row.test_rate = msg.validation_rate, msg.test_rate
            row.total_msg = msg.message_count
            row.message = msg.value()
        existing = self._stored(row)
        if existing is not None:  # a re-delivery
            logger.info("control message %s:%d:%d is stored already", topic, partition, offset)
            return existing
        try:
            return self._add(row)
        except (OperationalError, InterfaceError):
            raise  # the store is unreachable: the message is read again
        except SQLAlchemyError as e:  # the store refuses what was parsed: refuse the message
            logger.warning("control message %s:%d:%d not storable: %s", topic, partition, offset, e)
            refused = Datasource(
                **where,
                status=DatasourceStatus.REFUSED,
                error=_text(f"the store refused it: {_why(e)}"),
                message=_raw(key, value),
            )
            return self._add(refused)

    def _stored(self, row: Datasource) -> Datasource | None:
        """The datasource already stored for where ``row`` was read. A row from before the
        ids were recorded (both empty) is the same message only if it holds the same."""
        with self.store.session() as s:
            same_place = select(Datasource).where(
                Datasource.source_topic == row.source_topic,
                Datasource.source_partition == row.source_partition,
                Datasource.source_offset == row.source_offset,
            )
            found = s.scalar(
                same_place.where(
                    Datasource.source_cluster == row.source_cluster,
                    Datasource.source_topic_id == row.source_topic_id,
                )
            )
            if found is not None:
                return found
            old = s.scalar(
                same_place.where(Datasource.source_cluster == "", Datasource.source_topic_id == "")
            )
            if old is not None and old.message == json.loads(json.dumps(row.message)):
                return old
            return None

    def _add(self, row: Datasource) -> Datasource:
        """Store ``row`` once: a row stored first by another listener wins."""
        with self.store.session() as s:
            if (
                row.deployment_id is not None
                and s.get(TrainingDeployment, row.deployment_id) is None
            ):
                row.status = DatasourceStatus.UNKNOWN_DEPLOYMENT
                row.error = f"no training deployment with id {row.deployment_id}"
            s.add(row)
            try:
                s.flush()
            except IntegrityError:  # another listener stored it first
                s.rollback()
                found = self._stored(row)
                if found is None:
                    raise
                return found
        return row

    def _hand_over(self, datasource_id: int) -> None:
        error = None
        if self.handler is not None:
            try:
                self.handler(self.settings, datasource_id)
            except Exception as e:  # noqa: BLE001 - recorded; the stream goes on
                logger.exception("handing datasource %d over failed", datasource_id)
                error = f"handing it to its deployment failed: {e}"
        with self.store.session() as s:
            row = s.get_one(Datasource, datasource_id)
            row.status = DatasourceStatus.FAILED if error else DatasourceStatus.ACCEPTED
            row.error = error

    def run(self, stop: threading.Event) -> None:
        while not stop.is_set():
            try:
                self.poll(1.0)
            except Exception:  # noqa: BLE001 - a store or broker hiccup: retry, don't die
                logger.exception("control listener: poll failed; retrying")
                time.sleep(1.0)

    def close(self) -> None:
        self.consumer.close()
        self.store.dispose()


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0][:300] if text else ''}"


def _text(text: str) -> str:
    """Text any store keeps: PostgreSQL refuses NUL characters."""
    return text.replace("\x00", "\\x00")


def _raw(key: bytes | None, value: bytes | None) -> dict[str, Any]:
    return {
        "key_hex": key[:64].hex() if key else None,
        "value": _text((value or b"").decode("utf-8", "replace")[:10_000]),
    }


class _ListenerActor:
    """The listener in a detached Ray actor, polling in a background thread."""

    def __init__(self, settings: Settings, handler: Handler | None, group_id: str):
        logging.basicConfig(level=logging.INFO)
        self._listener = ControlListener(settings, handler, group_id)
        self._stop = threading.Event()
        self._thread = threading.Thread(
            target=self._listener.run, args=(self._stop,), daemon=True, name="control-listener"
        )
        self._thread.start()
        self._started = time.time()

    def status(self) -> dict[str, Any]:
        return {
            "alive": self._thread.is_alive(),
            "processed": self._listener.processed,
            "since": self._started,
        }

    def shutdown(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self._listener.close()


def start_listener(
    settings: Settings,
    handler: Handler | None,
    name: str = LISTENER_NAME,
    group_id: str = GROUP_ID,
) -> Any:
    """Start (or find) the listener actor; Ray restarts it if its process dies."""
    import ray

    from kafkaml_ray._private.rayutil import start_detached

    actor = start_detached(
        settings,
        _ListenerActor,
        name,
        settings,
        handler,
        group_id,
        get_if_exists=True,
        max_restarts=-1,
        max_task_retries=-1,
    )
    ray.get(actor.status.remote(), timeout=120)
    return actor


def stop_listener(settings: Settings, name: str = LISTENER_NAME) -> bool:
    from kafkaml_ray._private.rayutil import stop_detached

    return stop_detached(settings, name, "shutdown")


def listener_status(settings: Settings, name: str = LISTENER_NAME) -> dict[str, Any] | None:
    import ray

    from kafkaml_ray._private.rayutil import find_actor

    try:
        actor = find_actor(settings, name)
        return None if actor is None else ray.get(actor.status.remote(), timeout=10)
    except Exception:  # noqa: BLE001 - not answering
        return None
