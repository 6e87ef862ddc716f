"""Settings read from the environment, in one object.

>>> from kafkaml_ray.settings import Settings
>>> s = Settings.from_env({"KAFKAML_HOME": "/tmp/kml", "KAFKAML_BROKER_PORT": "19092"})
>>> s.bootstrap_servers, s.db_url
('127.0.0.1:19092', 'sqlite:////tmp/kml/kafkaml.db')
>>> s = Settings.from_env({"KAFKAML_KAFKA_SECURITY_PROTOCOL": "SASL_SSL"})
>>> s.kafka_config()["security.protocol"]
'SASL_SSL'
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path

from pydantic import BaseModel, Field, ValidationError, field_validator

from kafkaml_ray.errors import InvalidInput

__all__ = ["Settings"]

_KAFKA_PREFIX = "KAFKAML_KAFKA_"


class Settings(BaseModel, frozen=True):
    """Where everything lives. Every field has an environment variable (see `from_env`)."""

    home: Path = Field(default_factory=lambda: Path.home() / ".kafkaml-ray")
    """Data directory: broker log dir, SQLite file, artifacts, logs (``KAFKAML_HOME``)."""
    bootstrap: str | None = None
    """An existing Kafka cluster (``KAFKAML_BOOTSTRAP``); unset = the embedded broker."""
    broker_host: str = "127.0.0.1"
    """Address the embedded broker listens on (``KAFKAML_BROKER_HOST``)."""
    broker_port: int = Field(9092, ge=1, le=65535)
    """Port of the embedded broker (``KAFKAML_BROKER_PORT``); its controller uses port+1."""
    db: str | None = None
    """SQLAlchemy URL of the metadata store (``KAFKAML_DB``); unset = SQLite under home."""
    artifacts: str | None = None
    """Artifact directory or fsspec URI (``KAFKAML_ARTIFACTS``); unset = home/artifacts."""
    ray_address: str | None = None
    """Ray cluster to use (``RAY_ADDRESS``); unset = the local head that ``up`` starts."""
    ray_port: int = Field(6380, ge=1, le=65535)
    """GCS port of the local Ray head (``KAFKAML_RAY_PORT``)."""
    ray_cpus: int | None = Field(None, ge=1)
    """CPUs the local Ray head offers (``KAFKAML_RAY_CPUS``); unset = every core."""
    dashboard_port: int = Field(8265, ge=1, le=65535)
    """Dashboard and job-server port of the local Ray head (``KAFKAML_DASHBOARD_PORT``)."""
    serve_port: int = Field(8000, ge=1, le=65535)
    """HTTP port of Ray Serve (inference requests) on 127.0.0.1 (``KAFKAML_SERVE_PORT``)."""
    ui_port: int = Field(8501, ge=1, le=65535)
    """Port of the Streamlit control panel (``KAFKAML_UI_PORT``)."""
    control_topic: str = "KAFKA_ML_CONTROL_TOPIC"
    """Topic of control messages, Kafka-ML's name by default (``KAFKAML_CONTROL_TOPIC``)."""
    validation_timeout_s: float = Field(120.0, gt=0)
    """Time limit for validating model code (``KAFKAML_VALIDATION_TIMEOUT``)."""
    validation_memory_mb: int = Field(4096, ge=256)
    """Memory limit (MiB) for validating model code (``KAFKAML_VALIDATION_MEMORY_MB``)."""
    validator_idle_s: float = Field(600.0, gt=0)
    """Seconds a framework's model-code validator stays warm without work before it exits
    and frees its memory (``KAFKAML_VALIDATOR_IDLE_S``)."""
    worker_idle_s: float = Field(60.0, gt=0)
    """Seconds the local Ray head keeps an idle worker process for the next task once it
    has more processes than CPUs (``KAFKAML_WORKER_IDLE_S``): a run's runner and read tasks
    then land on warm processes; Ray's own default is 1 s."""
    kafka: dict[str, str] = Field(default_factory=dict)
    """Extra librdkafka settings, e.g. SASL/SSL: ``KAFKAML_KAFKA_SECURITY_PROTOCOL=SASL_SSL``
    becomes ``security.protocol``."""

    @field_validator("control_topic")
    @classmethod
    def _topic_name(cls, v: str) -> str:
        if not v or len(v) > 249 or not all(c.isalnum() or c in "._-" for c in v):
            raise ValueError("a Kafka topic name: 1-249 of letters, digits, '.', '_', '-'")
        return v

    @classmethod
    def from_env(cls, env: Mapping[str, str] | None = None) -> Settings:
        """Read settings from ``env`` (default: ``os.environ``)."""
        env = os.environ if env is None else env
        names = {
            "home": "KAFKAML_HOME",
            "bootstrap": "KAFKAML_BOOTSTRAP",
            "broker_host": "KAFKAML_BROKER_HOST",
            "broker_port": "KAFKAML_BROKER_PORT",
            "db": "KAFKAML_DB",
            "artifacts": "KAFKAML_ARTIFACTS",
            "ray_address": "RAY_ADDRESS",
            "ray_port": "KAFKAML_RAY_PORT",
            "ray_cpus": "KAFKAML_RAY_CPUS",
            "dashboard_port": "KAFKAML_DASHBOARD_PORT",
            "serve_port": "KAFKAML_SERVE_PORT",
            "ui_port": "KAFKAML_UI_PORT",
            "control_topic": "KAFKAML_CONTROL_TOPIC",
            "validation_timeout_s": "KAFKAML_VALIDATION_TIMEOUT",
            "validation_memory_mb": "KAFKAML_VALIDATION_MEMORY_MB",
            "validator_idle_s": "KAFKAML_VALIDATOR_IDLE_S",
            "worker_idle_s": "KAFKAML_WORKER_IDLE_S",
        }
        values: dict[str, object] = {k: env[v] for k, v in names.items() if env.get(v)}
        values["kafka"] = {
            k[len(_KAFKA_PREFIX) :].lower().replace("_", "."): v
            for k, v in env.items()
            if k.startswith(_KAFKA_PREFIX)
        }
        try:
            return cls(**values)
        except ValidationError as e:
            first = e.errors()[0]
            field = str(first["loc"][0]) if first["loc"] else "?"
            raise InvalidInput(
                f"invalid setting {names.get(field, field)}={values.get(field)!r}: {first['msg']}"
            ) from None

    @property
    def bootstrap_servers(self) -> str:
        """The Kafka cluster in use: ``KAFKAML_BOOTSTRAP`` or the embedded broker."""
        return self.bootstrap or f"{self.broker_host}:{self.broker_port}"

    @property
    def embedded_broker(self) -> bool:
        return self.bootstrap is None

    @property
    def db_url(self) -> str:
        return self.db or f"sqlite:///{self.home / 'kafkaml.db'}"

    @property
    def artifacts_uri(self) -> str:
        return self.artifacts or str(self.home / "artifacts")

    def kafka_config(self, **extra: object) -> dict[str, object]:
        """librdkafka settings for a producer, consumer or admin client of this cluster."""
        return {"bootstrap.servers": self.bootstrap_servers, **self.kafka, **extra}

    def env(self) -> dict[str, str]:
        """These settings as environment variables (for Ray jobs and child processes)."""
        out = {
            "KAFKAML_HOME": str(self.home),
            "KAFKAML_BROKER_HOST": self.broker_host,
            "KAFKAML_BROKER_PORT": str(self.broker_port),
            "KAFKAML_DB": self.db_url,
            "KAFKAML_ARTIFACTS": self.artifacts_uri,
            "KAFKAML_RAY_PORT": str(self.ray_port),
            "KAFKAML_DASHBOARD_PORT": str(self.dashboard_port),
            "KAFKAML_SERVE_PORT": str(self.serve_port),
            "KAFKAML_UI_PORT": str(self.ui_port),
            "KAFKAML_CONTROL_TOPIC": self.control_topic,
            "KAFKAML_VALIDATION_TIMEOUT": str(self.validation_timeout_s),
            "KAFKAML_VALIDATION_MEMORY_MB": str(self.validation_memory_mb),
            "KAFKAML_VALIDATOR_IDLE_S": str(self.validator_idle_s),
            "KAFKAML_WORKER_IDLE_S": str(self.worker_idle_s),
        }
        if self.bootstrap:
            out["KAFKAML_BOOTSTRAP"] = self.bootstrap
        if self.ray_cpus:
            out["KAFKAML_RAY_CPUS"] = str(self.ray_cpus)
        if self.ray_address:
            out["RAY_ADDRESS"] = self.ray_address
        for k, v in self.kafka.items():
            out[_KAFKA_PREFIX + k.replace(".", "_").upper()] = v
        return out
