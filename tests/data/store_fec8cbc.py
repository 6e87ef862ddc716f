"""The store's models as they were at commit fec8cbc, the oldest schema users' databases can
have (made by ``Base.metadata.create_all``, before the store kept a schema version): copied
from ``git show fec8cbc:kafkaml_ray/store.py``, models only, unchanged. The migration tests
create a database from them and upgrade it. Never edit: it is what is out there."""

from __future__ import annotations

import enum
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    Boolean,
    Column,
    DateTime,
    Enum,
    Float,
    ForeignKey,
    Integer,
    String,
    Table,
    Text,
    UniqueConstraint,
)
from sqlalchemy.orm import DeclarativeBase, Mapped, mapped_column, relationship


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


class ResultStatus(enum.StrEnum):
    WAITING = "waiting"  # deployed, waiting for its data stream
    TRAINING = "training"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def done(self) -> bool:
        return self in (ResultStatus.FINISHED, ResultStatus.FAILED, ResultStatus.STOPPED)


class DatasourceStatus(enum.StrEnum):
    RECEIVED = "received"  # stored, not yet handed to its deployment
    ACCEPTED = "accepted"  # handed to its deployment
    UNKNOWN_DEPLOYMENT = "unknown_deployment"  # well formed, but names no deployment
    REFUSED = "refused"  # broken control message; `error` says why
    FAILED = "failed"  # reading its ranges failed; `error` says why


class InferenceStatus(enum.StrEnum):
    DEPLOYING = "deploying"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class Base(DeclarativeBase):
    type_annotation_map = {dict[str, Any]: JSON, list[Any]: JSON}


class _Stamped:
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=_now, onupdate=_now)


configuration_models = Table(
    "configuration_models",
    Base.metadata,
    Column(
        "configuration_id", ForeignKey("configurations.id", ondelete="CASCADE"), primary_key=True
    ),
    Column("model_id", ForeignKey("models.id", ondelete="RESTRICT"), primary_key=True),
)


class MLModel(_Stamped, Base):
    """Registered model code and what its validation found."""

    __tablename__ = "models"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    framework: Mapped[str] = mapped_column(String(20))  # "pytorch" | "tensorflow"
    imports: Mapped[str] = mapped_column(Text, default="")
    code: Mapped[str] = mapped_column(Text)
    input_shape: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    output_shape: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    param_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    configurations: Mapped[list[Configuration]] = relationship(
        secondary=configuration_models, back_populates="models"
    )


class Configuration(_Stamped, Base):
    """A named set of models trained together on one stream."""

    __tablename__ = "configurations"
    id: Mapped[int] = mapped_column(primary_key=True)
    name: Mapped[str] = mapped_column(String(200), unique=True)
    description: Mapped[str] = mapped_column(Text, default="")
    models: Mapped[list[MLModel]] = relationship(
        secondary=configuration_models, back_populates="configurations", order_by=MLModel.id
    )


class TrainingDeployment(_Stamped, Base):
    """A configuration deployed for training with its parameters."""

    __tablename__ = "deployments"
    id: Mapped[int] = mapped_column(primary_key=True)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("configurations.id"))
    batch_size: Mapped[int] = mapped_column(Integer, default=32)
    # Per framework: {"pytorch": {"train": {...}, "val": {...}}, "tensorflow": {...}}
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gpu_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    confusion_matrix: Mapped[bool] = mapped_column(Boolean, default=True)
    shuffle_seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    on_malformed: Mapped[str] = mapped_column(String(10), default="fail")
    job_id: Mapped[str | None] = mapped_column(String(200), nullable=True)
    datasource_id: Mapped[int | None] = mapped_column(
        ForeignKey("datasources.id", ondelete="SET NULL"), nullable=True
    )
    configuration: Mapped[Configuration] = relationship()
    results: Mapped[list[TrainingResult]] = relationship(
        back_populates="deployment", cascade="all, delete-orphan", order_by="TrainingResult.id"
    )


class TrainingResult(_Stamped, Base):
    """One model of a deployment: its status, metrics, learning curve and weights."""

    __tablename__ = "results"
    id: Mapped[int] = mapped_column(primary_key=True)
    deployment_id: Mapped[int | None] = mapped_column(
        ForeignKey("deployments.id", ondelete="CASCADE"), nullable=True
    )
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    status: Mapped[ResultStatus] = mapped_column(
        Enum(ResultStatus, native_enum=False, length=20), default=ResultStatus.WAITING
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    train_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    val_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    test_metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    # [{"epoch": 1, "train": {"loss": ...}, "val": {"loss": ...}}, ...]
    history: Mapped[list[Any]] = mapped_column(JSON, default=list)
    # {"epoch": 2, "epochs": 5, "batch": 10, "batches": 40, "metrics": {...}}
    progress: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    confusion_matrix: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    training_time_s: Mapped[float | None] = mapped_column(Float, nullable=True)
    weights_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    confusion_matrix_uri: Mapped[str | None] = mapped_column(Text, nullable=True)
    hyperparameters: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    tune_id: Mapped[int | None] = mapped_column(
        ForeignKey("tune_runs.id", ondelete="CASCADE"), nullable=True
    )
    best: Mapped[bool] = mapped_column(Boolean, default=False)
    deployment: Mapped[TrainingDeployment | None] = relationship(back_populates="results")
    model: Mapped[MLModel] = relationship()


class Datasource(_Stamped, Base):
    """A control message as received: the stream it names, or why it was refused."""

    __tablename__ = "datasources"
    __table_args__ = (UniqueConstraint("source_topic", "source_partition", "source_offset"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    # Where the control message was read: the key that makes storing it idempotent.
    source_topic: Mapped[str] = mapped_column(String(255))
    source_partition: Mapped[int] = mapped_column(Integer)
    source_offset: Mapped[int] = mapped_column(Integer)
    deployment_id: Mapped[int | None] = mapped_column(Integer, nullable=True)
    status: Mapped[DatasourceStatus] = mapped_column(
        Enum(DatasourceStatus, native_enum=False, length=30)
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    topic: Mapped[str] = mapped_column(Text, default="")  # "t:p:start:end,..."
    input_format: Mapped[str] = mapped_column(String(10), default="RAW")
    input_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    description: Mapped[str] = mapped_column(Text, default="")
    validation_rate: Mapped[float] = mapped_column(Float, default=0.0)
    test_rate: Mapped[float] = mapped_column(Float, default=0.0)
    total_msg: Mapped[int] = mapped_column(Integer, default=0)
    malformed_count: Mapped[int] = mapped_column(Integer, default=0)
    message: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # as received


class Inference(_Stamped, Base):
    """A training result deployed as a Ray Serve application over Kafka topics."""

    __tablename__ = "inferences"
    # Never reuse a deleted inference's id: the id names its Serve app and consumer group.
    __table_args__ = {"sqlite_autoincrement": True}
    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id"))
    status: Mapped[InferenceStatus] = mapped_column(
        Enum(InferenceStatus, native_enum=False, length=20), default=InferenceStatus.DEPLOYING
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    input_topic: Mapped[str] = mapped_column(String(255))
    output_topic: Mapped[str] = mapped_column(String(255))
    input_format: Mapped[str] = mapped_column(String(10), default="RAW")
    input_config: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    replicas: Mapped[int] = mapped_column(Integer, default=1)
    min_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    max_replicas: Mapped[int | None] = mapped_column(Integer, nullable=True)
    gpu_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    batch_size: Mapped[int] = mapped_column(Integer, default=512)
    max_wait_ms: Mapped[float] = mapped_column(Float, default=0.0)
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[TrainingResult] = relationship()


class ReplicaStats(Base):
    """What one Kafka ingress replica of an inference reports (upserted every few seconds)."""

    __tablename__ = "replica_stats"
    inference_id: Mapped[int] = mapped_column(
        ForeignKey("inferences.id", ondelete="CASCADE"), primary_key=True
    )
    replica: Mapped[str] = mapped_column(String(200), primary_key=True)
    consumed: Mapped[int] = mapped_column(Integer, default=0)
    predicted: Mapped[int] = mapped_column(Integer, default=0)
    dead_letters: Mapped[int] = mapped_column(Integer, default=0)
    lag: Mapped[int] = mapped_column(Integer, default=0)
    msgs_per_s: Mapped[float] = mapped_column(Float, default=0.0)
    partitions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=_now, onupdate=_now)


class TuneRun(_Stamped, Base):
    """A Ray Tune search over one model's hyper-parameters on a stored datasource."""

    __tablename__ = "tune_runs"
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    datasource_id: Mapped[int] = mapped_column(ForeignKey("datasources.id"))
    space: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metric: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(3), default="max")
    num_samples: Mapped[int] = mapped_column(Integer, default=4)
    status: Mapped[str] = mapped_column(String(20), default="running")
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[MLModel] = relationship()
    results: Mapped[list[TrainingResult]] = relationship(
        cascade="all, delete-orphan", order_by=TrainingResult.id
    )
