"""Client library: send training data (and inference inputs) to Kafka as Kafka-ML does.

A sink writes samples to a data topic, then ``close()`` sends the *control message* that
announces them to a training deployment. The ranges it names come from the producer's
delivery reports (so another producer writing the same topic at the same time never leaks
in), and a sink that could not deliver every sample raises instead of announcing a gap.

>>> from kafkaml_ray.ingest import RawSink
>>> with RawSink("127.0.0.1:9092", topic="digits", deployment_id=1,      # doctest: +SKIP
...              validation_rate=0.1, test_rate=0.1) as sink:
...     sink.send_many(images, labels)

With ``online=True`` (Kafka-ML's ``OnlineRawSink``) the control message goes first, once, on
the first ``send()``: it names the whole topic (``"incremental": true``, ``total_msg`` null) and
an online training consumes whatever follows; ``close()`` only flushes.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from kafkaml_ray.errors import InvalidInput, KafkaMLError
from kafkaml_ray.ingest.control import ControlMessage, TopicRange
from kafkaml_ray.ingest.formats import (
    DTYPES,
    AvroFormat,
    JsonFormat,
    MessageFormat,
    RawFormat,
    get_format,
)

__all__ = [
    "KafkaMLSink",
    "RawSink",
    "AvroSink",
    "JsonSink",
    "OnlineRawSink",
    "InferenceProducer",
    "DeliveryError",
    "producer_config",
]

logger = logging.getLogger(__name__)


class DeliveryError(KafkaMLError):
    """Messages the broker did not acknowledge; no control message was sent."""


def producer_config(bootstrap_servers: str, extra: Mapping[str, Any] | None = None) -> dict:
    """Producer settings: idempotent, batched, and ``murmur2_random`` so that keyed
    messages land in the partitions Java clients and kafka-python choose."""
    return {
        "bootstrap.servers": bootstrap_servers,
        "partitioner": "murmur2_random",
        "enable.idempotence": True,
        "linger.ms": 20,
        "batch.num.messages": 10000,
        "queue.buffering.max.messages": 200000,
        **dict(extra or {}),
    }


class _Producer:
    """A confluent-kafka producer that records what the broker acknowledged."""

    def __init__(self, bootstrap_servers: str, config: Mapping[str, Any] | None = None):
        from confluent_kafka import Producer

        self._producer = Producer(producer_config(bootstrap_servers, config))
        self.offsets: dict[tuple[str, int], list[int]] = {}
        self.failures: list[str] = []
        self.sent = 0
        self.closed = False

    def _delivered(self, err, msg) -> None:
        if err is not None:
            self.failures.append(str(err))
        else:
            self.offsets.setdefault((msg.topic(), msg.partition()), []).append(msg.offset())

    def _delivered_untracked(self, err, msg) -> None:
        if err is not None:
            self.failures.append(str(err))

    def produce(
        self,
        topic: str,
        value: bytes,
        key: bytes | None = None,
        headers: list | None = None,
        partition: int | None = None,
        track: bool = True,
    ) -> None:
        """Queue a message; ``track`` records its offset for the control message."""
        callback = self._delivered if track else self._delivered_untracked
        kwargs: dict[str, Any] = {"key": key, "on_delivery": callback}
        if headers:
            kwargs["headers"] = headers
        if partition is not None:
            kwargs["partition"] = partition
        while True:
            try:
                self._producer.produce(topic, value, **kwargs)
                break
            except BufferError:  # local queue full: let deliveries drain
                self._producer.poll(0.05)
        self.sent += 1
        if self.sent % 1000 == 0:
            self._producer.poll(0)

    def flush(self, timeout: float) -> None:
        remaining = self._producer.flush(timeout)
        if remaining:
            raise DeliveryError(f"{remaining} messages were still unsent after {timeout:.0f}s")
        if self.failures:
            raise DeliveryError(
                f"{len(self.failures)} messages were not delivered, e.g.: {self.failures[0]}"
            )

    def close(self) -> None:
        """Shut the producer's connections down (flush first): an idle producer left open
        reconnects, and logs each refusal, once the broker is gone."""
        if not self.closed:
            self.closed = True
            self._producer.close()


def ranges_from_offsets(offsets: Mapping[tuple[str, int], list[int]]) -> list[TopicRange]:
    """Contiguous runs of acknowledged offsets, per partition (sorted)."""
    out = []
    for (topic, partition), offs in sorted(offsets.items()):
        arr = np.unique(np.asarray(offs, dtype=np.int64))
        breaks = np.flatnonzero(np.diff(arr) != 1) + 1
        for run in np.split(arr, breaks):
            out.append(TopicRange(topic, partition, int(run[0]), int(run[-1]) + 1))
    return out


class KafkaMLSink:
    """Sends samples of one format to ``topic`` and, on ``close()``, the control message.

    Parameters follow Kafka-ML's sinks (with ``bootstrap_servers`` spelled right):
    ``topic``, ``deployment_id``, ``description``, ``validation_rate``, ``test_rate``,
    ``control_topic``, ``dataset_restrictions``, ``unsupervised_topic``. ``progress=True``
    shows a progress bar; ``config`` holds extra librdkafka settings (SASL/SSL).

    ``online=True`` is Kafka-ML's online (incremental) mode: the control message is sent
    once, on the first ``send()`` and before that sample, naming the whole topic (no ranges,
    ``total_msg`` null, ``test_rate`` 0); ``close()`` then only flushes, and no closing
    control message ever comes.
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        deployment_id: int,
        input_format: MessageFormat | None = None,
        description: str = "",
        validation_rate: float = 0.0,
        test_rate: float = 0.0,
        control_topic: str = "KAFKA_ML_CONTROL_TOPIC",
        dataset_restrictions: Mapping[str, Any] | None = None,
        unsupervised_topic: str | None = None,
        progress: bool = False,
        config: Mapping[str, Any] | None = None,
        flush_timeout: float = 120.0,
        online: bool = False,
    ):
        if not isinstance(deployment_id, int) or deployment_id < 0:
            raise InvalidInput(f"deployment_id must be a whole number >= 0, not {deployment_id!r}")
        if (
            not 0 <= validation_rate < 1
            or not 0 <= test_rate < 1
            or validation_rate + test_rate >= 1
        ):
            raise InvalidInput("validation_rate and test_rate must be >= 0 and sum to less than 1")
        if online and test_rate:
            raise InvalidInput("an online sink has no test split: test_rate must be 0")
        self.online = bool(online)
        self.topic, self.deployment_id, self.control_topic = topic, deployment_id, control_topic
        self.format = input_format
        self.description, self.validation_rate, self.test_rate = (
            description,
            validation_rate,
            test_rate,
        )
        self.dataset_restrictions = dict(dataset_restrictions or {})
        self.unsupervised_topic = unsupervised_topic
        self.flush_timeout = flush_timeout
        self._producer = _Producer(bootstrap_servers, config)
        self._progress = progress
        self._bar = None
        self.closed = False
        # The control message sent: by close(), or by the first send() of an online sink.
        self.announced: ControlMessage | None = None

    # -- sending -----------------------------------------------------------------------
    def _format_for(self, data: Any, label: Any) -> MessageFormat:
        raise InvalidInput("this sink needs its format")

    def send(self, data: Any, label: Any = None) -> None:
        """Send one sample (and its label, in the key)."""
        if self.closed:
            raise InvalidInput("the sink is closed")
        if self.format is None:
            self.format = self._format_for(data, label)
        value, key = self.format.encode(data, label)
        if self.online and self.announced is None:
            # Delivered before the first sample is produced: its timestamp is <= theirs.
            self._announce()
        # An online stream has no end: its offsets are not kept (nor needed).
        self._producer.produce(self.topic, value, key, track=not self.online)
        if self._bar is not None:
            self._bar.update(1)

    def send_many(self, data: Iterable[Any], labels: Iterable[Any] | None = None) -> None:
        """Send many samples; ``labels`` (if given) pairs with ``data``."""
        data = list(data) if not hasattr(data, "__len__") else data
        if self._progress and self._bar is None:
            from tqdm.auto import tqdm

            self._bar = tqdm(total=len(data), desc=f"sending to {self.topic}", unit="msg")
        labels = [None] * len(data) if labels is None else labels
        for x, y in zip(data, labels, strict=True):
            self.send(x, y)

    # -- closing -----------------------------------------------------------------------
    def control_message(self) -> ControlMessage:
        """The control message: the delivered ranges, or (online) the whole topic."""
        ranges = [] if self.online else ranges_from_offsets(self._producer.offsets)
        return ControlMessage(
            deployment_id=self.deployment_id,
            ranges=ranges,
            input_format=self.format.name if self.format else "RAW",
            input_config=self.format.config() if self.format else {},
            description=self.description,
            validation_rate=self.validation_rate,
            test_rate=self.test_rate,
            total_msg=None if self.online else sum(len(r) for r in ranges),
            dataset_restrictions=self.dataset_restrictions,
            unsupervised_topic=self.unsupervised_topic,
            incremental=self.online,
            topics=[self.topic] if self.online else [],
        )

    def _announce(self) -> ControlMessage:
        """Send the control message and wait until the broker has it."""
        msg = self.control_message()
        key, value, headers = msg.to_kafka()
        self._producer.produce(self.control_topic, value, key, headers, track=False)
        self._producer.flush(self.flush_timeout)
        self.announced = msg
        if self.online:
            logger.info(
                "announced topic %s to deployment %d (online)", self.topic, msg.deployment_id
            )
        else:
            logger.info("announced %d messages to deployment %d", msg.total_msg, msg.deployment_id)
        return msg

    def close(self) -> ControlMessage | None:
        """Flush the data, then send (and flush) the control message; return it.

        An online sink sent its control message with its first sample: ``close()`` only
        flushes and returns that message (None when nothing was sent)."""
        if self.closed:
            raise InvalidInput("the sink is closed already")
        self.closed = True
        try:
            self._producer.flush(self.flush_timeout)
            if self.online:
                return self.announced
            if not self._producer.offsets:
                raise InvalidInput("nothing was sent: no control message")
            return self._announce()
        finally:
            self._producer.close()
            if self._bar is not None:
                self._bar.close()

    def online_close(self) -> ControlMessage | None:
        """Kafka-ML's name for closing an online sink: flush, send nothing more."""
        if not self.online:
            raise InvalidInput("online_close() is for online sinks: close() announces a batch")
        return self.close()

    def __enter__(self) -> KafkaMLSink:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:  # an error mid-way: deliver what was sent, announce nothing (more)
            self.closed = True
            self._producer._producer.flush(self.flush_timeout)
            self._producer.close()
            if not self.online:
                logger.warning(
                    "no control message sent for deployment %d: %s", self.deployment_id, exc
                )


def _type_name(x: Any) -> str:
    a = np.asarray(x)
    if a.dtype.kind in "US":
        return "string"
    name = a.dtype.name
    if name not in DTYPES:
        raise InvalidInput(f"values of type {name} have no Kafka-ML type; convert them first")
    return name


class RawSink(KafkaMLSink):
    """RAW: numpy bytes. Types and shapes are taken from the first sample when not given."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        deployment_id: int,
        data_type: str | None = None,
        label_type: str | None = None,
        data_reshape: str | None = None,
        label_reshape: str | None = None,
        **kwargs: Any,
    ):
        fmt = None
        if data_type is not None:
            fmt = RawFormat(data_type, label_type, data_reshape, label_reshape)
        self._given = (data_type, label_type, data_reshape, label_reshape)
        super().__init__(bootstrap_servers, topic, deployment_id, fmt, **kwargs)

    def _format_for(self, data: Any, label: Any) -> MessageFormat:
        data_type, label_type, data_reshape, label_reshape = self._given
        shape = np.shape(data)
        return RawFormat(
            data_type or _type_name(data),
            label_type or (None if label is None else _type_name(label)),
            data_reshape if data_reshape is not None else " ".join(map(str, shape)),
            label_reshape if label_reshape is not None else " ".join(map(str, np.shape(label))),
        )


class OnlineRawSink(RawSink):
    """Kafka-ML's ``OnlineRawSink``: a :class:`RawSink` with ``online=True``, with Kafka-ML's
    signature (``boostrap_servers`` spelled as Kafka-ML spells it; ``test_rate`` is 0).

    The first ``send()`` infers types and shapes from its sample and sends the control
    message (the plain topic name, ``"incremental": true``); ``online_close()`` only flushes.
    ``group_id`` is accepted for Kafka-ML's sake and not used (this sink consumes nothing);
    other keywords (``config``, ``progress``, ...) go to :class:`KafkaMLSink`.
    """

    def __init__(
        self,
        boostrap_servers: str,
        topic: str,
        deployment_id: int,
        data_type: str | None = None,
        label_type: str | None = None,
        description: str = "",
        data_reshape: str | None = None,
        label_reshape: str | None = None,
        validation_rate: float = 0,
        control_topic: str = "KAFKA_ML_CONTROL_TOPIC",
        group_id: str = "sink",
        unsupervised_topic: str | None = None,
        **kwargs: Any,
    ):
        self.group_id = group_id
        super().__init__(
            boostrap_servers,
            topic,
            deployment_id,
            data_type=data_type,
            label_type=label_type,
            data_reshape=data_reshape,
            label_reshape=label_reshape,
            description=description,
            validation_rate=validation_rate,
            control_topic=control_topic,
            unsupervised_topic=unsupervised_topic,
            online=True,
            **kwargs,
        )


def _scheme(scheme: str | Mapping | None, filename: str | Path | None) -> Any:
    if filename is not None:
        return Path(filename).read_text()
    return scheme


class AvroSink(KafkaMLSink):
    """AVRO: schemaless records of ``data_scheme`` (value) and ``label_scheme`` (key).
    Schemas are dicts, JSON text or files (``data_scheme_filename``, as in Kafka-ML)."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        deployment_id: int,
        data_scheme: str | Mapping | None = None,
        label_scheme: str | Mapping | None = None,
        data_scheme_filename: str | Path | None = None,
        label_scheme_filename: str | Path | None = None,
        **kwargs: Any,
    ):
        data = _scheme(data_scheme, data_scheme_filename)
        if data is None:
            raise InvalidInput("AvroSink needs data_scheme or data_scheme_filename")
        fmt = AvroFormat(data, _scheme(label_scheme, label_scheme_filename))
        super().__init__(bootstrap_servers, topic, deployment_id, fmt, **kwargs)

    def send_avro(self, data: Mapping[str, Any], label: Mapping[str, Any] | None = None) -> None:
        """Kafka-ML's name for `send`."""
        self.send(data, label)


class JsonSink(KafkaMLSink):
    """JSON: the value is the sample as a JSON array, the key the label as JSON."""

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        deployment_id: int,
        data_type: str = "float32",
        label_type: str | None = None,
        data_reshape: str | None = None,
        label_reshape: str | None = None,
        **kwargs: Any,
    ):
        fmt = JsonFormat(data_type, label_type, data_reshape, label_reshape)
        super().__init__(bootstrap_servers, topic, deployment_id, fmt, **kwargs)


class InferenceProducer:
    """Inputs for an inference: one message per sample in its input format.

    >>> p = InferenceProducer("127.0.0.1:9092", "digits-in", "RAW",   # doctest: +SKIP
    ...                       {"data_type": "float32", "data_reshape": "8 8"})
    >>> p.send(image, key=b"req-1"); p.flush()                         # doctest: +SKIP
    """

    def __init__(
        self,
        bootstrap_servers: str,
        topic: str,
        input_format: str = "RAW",
        input_config: Mapping[str, Any] | None = None,
        config: Mapping[str, Any] | None = None,
    ):
        self.topic = topic
        self.format = get_format(input_format, input_config or {})
        self._producer = _Producer(bootstrap_servers, config)

    def send(
        self,
        data: Any,
        key: bytes | None = None,
        headers: list | None = None,
        partition: int | None = None,
    ) -> None:
        value, _ = self.format.encode(data)
        self._producer.produce(self.topic, value, key, headers, partition)

    def send_raw(
        self,
        value: bytes,
        key: bytes | None = None,
        headers: list | None = None,
        partition: int | None = None,
    ) -> None:
        """Send bytes as they are (to test what the inference does with bad input)."""
        self._producer.produce(self.topic, value, key, headers, partition)

    def flush(self, timeout: float = 60.0) -> None:
        self._producer.flush(timeout)

    def close(self) -> None:
        """Deliver what was sent, then shut the producer down."""
        try:
            self.flush()
        finally:
            self._producer.close()

    def __enter__(self) -> InferenceProducer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
