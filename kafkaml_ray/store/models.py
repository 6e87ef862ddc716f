"""The store's tables (SQLAlchemy 2 models) and the statuses their rows take.

One source of truth for the UI, the CLI, the Python API, the control listener and the
training workers; the migrations (`kafkaml_ray.store.migrations`) make these tables, and
`kafkaml_ray.store.runtime.Store` opens them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
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
from sqlalchemy.orm import (
    DeclarativeBase,
    Mapped,
    mapped_column,
    relationship,
)

from kafkaml_ray.options import DEFAULT_BATCH_SIZE
from kafkaml_ray.statuses import DatasourceStatus, InferenceStatus, ResultStatus, TuneStatus

__all__ = [
    "Base",
    "MLModel",
    "ModelVersion",
    "Configuration",
    "TrainingDeployment",
    "TrainingResult",
    "Datasource",
    "Inference",
    "ReplicaStats",
    "OnlineWindow",
    "ResultVersion",
    "TuneRun",
    "ResultStatus",
    "DatasourceStatus",
    "InferenceStatus",
    "TuneStatus",
]


def _now() -> datetime:
    return datetime.now(UTC).replace(tzinfo=None)


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
    framework: Mapped[str] = mapped_column(String(20))  # `kafkaml_ray.frameworks.names()`
    imports: Mapped[str] = mapped_column(Text, default="")
    code: Mapped[str] = mapped_column(Text)
    input_shape: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    output_shape: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    param_count: Mapped[int | None] = mapped_column(Integer, nullable=True)
    # The names of the metrics it reports (None: not known before it trains).
    metrics: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    configurations: Mapped[list[Configuration]] = relationship(
        secondary=configuration_models, back_populates="models"
    )


class ModelVersion(Base):
    """One version of a model's code (and imports), as results trained with it: updating a
    model adds a version and never changes what its earlier results trained with."""

    __tablename__ = "model_versions"
    __table_args__ = (
        UniqueConstraint("model_id", "sha256", name="uq_model_versions_code"),
        UniqueConstraint("model_id", "number", name="uq_model_versions_number"),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id", ondelete="CASCADE"))
    number: Mapped[int] = mapped_column(Integer)  # 1, 2, ... per model
    sha256: Mapped[str] = mapped_column(String(64))  # of imports, a NUL, then the code
    imports: Mapped[str] = mapped_column(Text, default="")
    code: Mapped[str] = mapped_column(Text)
    # What its validation found (the model's own shapes are its newest code's).
    input_shape: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    output_shape: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    metrics: Mapped[list[Any] | None] = mapped_column(JSON, nullable=True)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


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
    __table_args__ = {"sqlite_autoincrement": True}  # (ids are never reused: migration 0008)
    id: Mapped[int] = mapped_column(primary_key=True)
    configuration_id: Mapped[int] = mapped_column(ForeignKey("configurations.id"))
    batch_size: Mapped[int] = mapped_column(Integer, default=32)
    # Per framework: {"pytorch": {"train": {...}, "val": {...}}, "tensorflow": {...}}
    kwargs: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    gpu_fraction: Mapped[float] = mapped_column(Float, default=0.0)
    confusion_matrix: Mapped[bool] = mapped_column(Boolean, default=True)
    shuffle_seed: Mapped[int | None] = mapped_column(Integer, nullable=True)
    on_malformed: Mapped[str] = mapped_column(String(10), default="fail")
    # Online training (options.OnlineOptions); None: a batch deployment.
    online: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
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
    __table_args__ = {"sqlite_autoincrement": True}  # (ids are never reused: migration 0008)
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
    # When each phase of the run began (seconds since the epoch): `schemas.phase_seconds`
    phases: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True, default=dict)
    deployment: Mapped[TrainingDeployment | None] = relationship(back_populates="results")
    model: Mapped[MLModel] = relationship()
    # The code it trained with (None only for results stored before versions were kept).
    model_version_id: Mapped[int | None] = mapped_column(
        ForeignKey("model_versions.id", name="fk_results_model_version_id"), nullable=True
    )
    model_version: Mapped[ModelVersion | None] = relationship()
    # Where it came from, recorded when it starts and kept as it was (`kafkaml_ray.lineage`).
    lineage: Mapped[dict[str, Any] | None] = mapped_column(JSON, nullable=True)
    tags: Mapped[list[str]] = mapped_column(JSON, default=list, server_default="[]")
    notes: Mapped[str] = mapped_column(Text, default="", server_default="")
    # The result it reproduces (`Client.reproduce`).
    reproduction_of: Mapped[int | None] = mapped_column(
        ForeignKey("results.id", name="fk_results_reproduction_of", ondelete="SET NULL"),
        nullable=True,
    )


class Datasource(_Stamped, Base):
    """A control message as received: the stream it names, or why it was refused."""

    __tablename__ = "datasources"
    __table_args__ = (
        UniqueConstraint(
            "source_cluster",
            "source_topic_id",
            "source_topic",
            "source_partition",
            "source_offset",
            name="uq_datasources_source",
        ),
    )
    id: Mapped[int] = mapped_column(primary_key=True)
    # Where the control message was read: the key that makes storing it idempotent. The
    # control listener fills the Kafka cluster id and topic id ("" in rows stored before).
    source_cluster: Mapped[str] = mapped_column(String(64), default="", server_default="")
    source_topic_id: Mapped[str] = mapped_column(String(64), default="", server_default="")
    source_topic: Mapped[str] = mapped_column(String(255))
    source_partition: Mapped[int] = mapped_column(Integer)
    source_offset: Mapped[int] = mapped_column(BigInteger)
    # The control message's Kafka timestamp (ms): an online stream starts there.
    source_timestamp: Mapped[int | None] = mapped_column(BigInteger, nullable=True)
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
    total_msg: Mapped[int] = mapped_column(BigInteger, default=0)
    malformed_count: Mapped[int] = mapped_column(BigInteger, default=0)
    message: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)  # as received


class OnlineWindow(Base):
    """One window of an online run: scored before it was trained on (prequential), then
    trained on; ``offsets`` are the ``[first, next)`` offsets it covers per ``"topic:p"``;
    ``created_at``: when it was trained (it is recorded at the next checkpoint)."""

    __tablename__ = "online_windows"
    __table_args__ = (UniqueConstraint("result_id", "window", name="uq_online_windows"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    window: Mapped[int] = mapped_column(Integer)
    messages: Mapped[int] = mapped_column(Integer)
    malformed: Mapped[int] = mapped_column(Integer, default=0)
    prequential: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    train: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    val: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    offsets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)  # published after it
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


class ResultVersion(Base):
    """A published version of an online result: its weights, the metric that published it,
    and the offsets (``{"topic:p": next}``) it was trained through."""

    __tablename__ = "result_versions"
    __table_args__ = (UniqueConstraint("result_id", "version", name="uq_result_versions"),)
    id: Mapped[int] = mapped_column(primary_key=True)
    result_id: Mapped[int] = mapped_column(ForeignKey("results.id", ondelete="CASCADE"))
    version: Mapped[int] = mapped_column(Integer)
    window: Mapped[int] = mapped_column(Integer)
    metrics: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    offsets: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    weights_uri: Mapped[str] = mapped_column(Text)
    created_at: Mapped[datetime] = mapped_column(DateTime, default=_now)


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
    batch_size: Mapped[int] = mapped_column(Integer, default=DEFAULT_BATCH_SIZE)
    max_wait_ms: Mapped[float] = mapped_column(Float, default=0.0)
    # An online result's version served: pinned, or (follow) each newly published one.
    version: Mapped[int | None] = mapped_column(Integer, nullable=True)
    follow: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    # Outputs, dead letters and input offsets in one Kafka transaction (`ServingOptions`).
    exactly_once: Mapped[bool] = mapped_column(Boolean, default=False, server_default="0")
    stats: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    result: Mapped[TrainingResult] = relationship()


class ReplicaStats(Base):
    """What one Kafka ingress replica of an inference reports (upserted every few seconds)."""

    __tablename__ = "replica_stats"
    inference_id: Mapped[int] = mapped_column(
        ForeignKey("inferences.id", ondelete="CASCADE"), primary_key=True
    )
    replica: Mapped[str] = mapped_column(String(200), primary_key=True)
    consumed: Mapped[int] = mapped_column(BigInteger, default=0)
    predicted: Mapped[int] = mapped_column(BigInteger, default=0)
    dead_letters: Mapped[int] = mapped_column(BigInteger, default=0)
    lag: Mapped[int] = mapped_column(BigInteger, default=0)
    msgs_per_s: Mapped[float] = mapped_column(Float, default=0.0)
    partitions: Mapped[list[Any]] = mapped_column(JSON, default=list)
    updated_at: Mapped[datetime] = mapped_column(DateTime, default=_now, onupdate=_now)


class TuneRun(_Stamped, Base):
    """A Ray Tune search over one model's hyper-parameters on a stored datasource."""

    __tablename__ = "tune_runs"
    __table_args__ = {"sqlite_autoincrement": True}  # (ids are never reused: migration 0008)
    id: Mapped[int] = mapped_column(primary_key=True)
    model_id: Mapped[int] = mapped_column(ForeignKey("models.id"))
    datasource_id: Mapped[int] = mapped_column(ForeignKey("datasources.id"))
    space: Mapped[dict[str, Any]] = mapped_column(JSON, default=dict)
    metric: Mapped[str] = mapped_column(String(100))
    mode: Mapped[str] = mapped_column(String(3), default="max")
    num_samples: Mapped[int] = mapped_column(Integer, default=4)
    # (stored by the member's name, like the other statuses: migration 0009)
    status: Mapped[TuneStatus] = mapped_column(
        Enum(TuneStatus, native_enum=False, length=20), default=TuneStatus.RUNNING
    )
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    model: Mapped[MLModel] = relationship()
    results: Mapped[list[TrainingResult]] = relationship(
        cascade="all, delete-orphan", order_by=TrainingResult.id
    )
