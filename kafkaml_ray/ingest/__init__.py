"""Streams in: Kafka-ML's message formats and control messages, sinks for training data and
inference inputs, the control listener, and Kafka ranges read into Ray Datasets."""

from kafkaml_ray.ingest.control import (
    ControlError,
    ControlMessage,
    TopicRange,
    format_sources,
    parse_control,
    parse_sources,
)
from kafkaml_ray.ingest.formats import (
    AvroFormat,
    DecodeError,
    JsonFormat,
    MessageFormat,
    RawFormat,
    get_format,
)
from kafkaml_ray.ingest.sinks import (
    AvroSink,
    DeliveryError,
    InferenceProducer,
    JsonSink,
    KafkaMLSink,
    OnlineRawSink,
    RawSink,
)

__all__ = [
    "ControlError",
    "ControlMessage",
    "TopicRange",
    "parse_control",
    "parse_sources",
    "format_sources",
    "AvroFormat",
    "DecodeError",
    "JsonFormat",
    "MessageFormat",
    "RawFormat",
    "get_format",
    "AvroSink",
    "DeliveryError",
    "InferenceProducer",
    "JsonSink",
    "KafkaMLSink",
    "OnlineRawSink",
    "RawSink",
]
