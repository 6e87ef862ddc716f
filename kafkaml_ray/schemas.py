"""What the Client returns: plain pydantic records, detached from the store (the options
of a deployment are in `kafkaml_ray.options`)."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import (
    BaseModel,
    ConfigDict,
    field_validator,
)

from kafkaml_ray.lineage_record import Lineage
from kafkaml_ray.redaction import public_url

__all__ = [
    "ModelInfo",
    "ModelVersionInfo",
    "ConfigurationInfo",
    "ResultInfo",
    "LineageInfo",
    "DeploymentInfo",
    "DatasourceInfo",
    "InferenceInfo",
    "Prediction",
    "TuneInfo",
    "WindowInfo",
    "VersionInfo",
    "PHASES",
    "phase_seconds",
]


class _Record(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class ModelInfo(_Record):
    id: int
    name: str
    description: str
    framework: str
    imports: str
    code: str
    input_shape: list[Any] | None
    output_shape: list[Any] | None
    param_count: int | None
    created_at: datetime
    updated_at: datetime

    @property
    def parameters(self) -> str:
        """The parameter count as people read it (scikit-learn's is known once trained)."""
        return f"{self.param_count:,}" if self.param_count is not None else "-"


class ModelVersionInfo(_Record):
    """One version of a model's code, as results trained with it."""

    model_id: int
    number: int
    sha256: str
    imports: str
    code: str
    created_at: datetime


class ConfigurationInfo(_Record):
    id: int
    name: str
    description: str
    model_ids: list[int]
    model_names: list[str]
    created_at: datetime

    @classmethod
    def of(cls, c: Any) -> ConfigurationInfo:
        return cls(
            id=c.id,
            name=c.name,
            description=c.description,
            created_at=c.created_at,
            model_ids=[m.id for m in c.models],
            model_names=[m.name for m in c.models],
        )


#: A training run's phases, in order: the mark that begins each (recorded by the run) and
#: what the time from it to the next mark is called.
PHASES = {
    "announced": "hand-over",  # the control message -> the runner reads the stream
    "read": "read",  # the stream's ranges read into a Ray Dataset
    "split": "split",  # ordered split into training / validation / test
    "start": "Ray Train start",  # the run's task (several workers: controller, worker group)
    "worker": "imports",  # the worker's loop began: the store, torch / TensorFlow imported
    "imported": "data to memory",  # the worker's shards as arrays
    "data": "model build",  # built from its code, its shape checked
    "built": "epochs",  # training, with the per-epoch validation and store writes
    "trained": "save",  # the weights in the artifact store
    "saved": "test",  # the test set evaluated
    "tested": "confusion matrix",  # the matrix, its picture, the last store writes
    "evaluated": "Ray Train end",  # the run ends (several workers: the group shuts down)
    "ended": "",
}


def phase_seconds(marks: dict[str, float] | None) -> dict[str, float]:
    """Seconds spent in each phase of a run, in order, from the marks it recorded (a phase
    whose end was not recorded is left out).

    >>> phase_seconds({"announced": 100.0, "read": 100.5, "split": 101.75, "ended": 110.0})
    {'hand-over': 0.5, 'read': 1.25}
    """
    marks = marks or {}
    names = list(PHASES)
    out: dict[str, float] = {}
    for here, after in zip(names, names[1:], strict=False):
        if here in marks and after in marks:
            out[PHASES[here]] = round(max(0.0, marks[after] - marks[here]), 3)
    return out


class ResultInfo(_Record):
    """One model's training: status, metrics, learning curve and artifacts."""

    id: int
    deployment_id: int | None
    model_id: int
    model_name: str
    framework: str
    status: str
    error: str | None
    train_metrics: dict[str, Any]
    val_metrics: dict[str, Any]
    test_metrics: dict[str, Any]
    history: list[Any]
    progress: dict[str, Any]
    confusion_matrix: list[Any] | None
    training_time_s: float | None
    weights_uri: str | None
    confusion_matrix_uri: str | None
    hyperparameters: dict[str, Any]
    tune_id: int | None
    best: bool
    #: seconds by phase of the run, in order (`phase_seconds`)
    phases: dict[str, float] = {}
    #: the version of its model's code it trained with, and that code's sha256 (None for
    #: results stored before versions were kept)
    model_version: int | None = None
    code_sha256: str | None = None
    #: where it came from, recorded when its run started (`kafkaml_ray.lineage`); None
    #: until then, and for results stored before lineage was recorded
    lineage: Lineage | None = None
    #: the datasource and parameters it trained with (from its lineage)
    datasource_id: int | None = None
    params: dict[str, Any] = {}
    tags: list[str] = []
    notes: str = ""
    #: the result this one reproduces
    reproduction_of: int | None = None
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, r: Any) -> ResultInfo:
        fields = {k: getattr(r, k) for k in cls.model_fields if hasattr(r, k)}
        fields.update(status=r.status.value, model_name=r.model.name, framework=r.model.framework)
        fields["phases"] = phase_seconds(getattr(r, "phases", None))
        version = getattr(r, "model_version", None)
        fields["model_version"] = version.number if version is not None else None
        fields["code_sha256"] = version.sha256 if version is not None else None
        fields["lineage"] = lineage = Lineage.of(getattr(r, "lineage", None))
        fields["datasource_id"] = lineage.datasource.id if lineage else None
        fields["params"] = dict(lineage.params) if lineage else {}
        fields["tags"] = list(getattr(r, "tags", None) or [])
        fields["notes"] = getattr(r, "notes", None) or ""
        for name in ("weights_uri", "confusion_matrix_uri"):  # (shown, never with a password)
            fields[name] = fields.get(name) and public_url(fields[name])
        return cls(**fields)

    @property
    def done(self) -> bool:
        return self.status in ("finished", "failed", "stopped")

    def metric(self, name: str) -> float | None:
        """Its final metric ``name``: ``test_x``, ``val_x`` or ``train_x`` (plain ``x``:
        training), or None when it has none.

        >>> r = ResultInfo.model_construct(train_metrics={"loss": 0.5}, val_metrics={},
        ...     test_metrics={"accuracy": 0.9})
        >>> r.metric("test_accuracy"), r.metric("loss"), r.metric("val_loss")
        (0.9, 0.5, None)
        """
        for prefix, metrics in (
            ("test_", self.test_metrics),
            ("val_", self.val_metrics),
            ("train_", self.train_metrics),
        ):
            if name.startswith(prefix) and name[len(prefix) :] in (metrics or {}):
                return metrics[name[len(prefix) :]]
        return (self.train_metrics or {}).get(name)


class LineageInfo(_Record):
    """A result with everything it links to (`Client.lineage`, `kafkaml_ray.lineage.tree`):
    its datasource, its deployment or Tune search, its published versions, the inferences
    that served it (from when to when) and its reproductions."""

    datasource: dict[str, Any] | None
    deployment: dict[str, Any] | None
    tune: dict[str, Any] | None
    result: dict[str, Any]
    versions: list[dict[str, Any]]
    inferences: list[dict[str, Any]]
    reproduction_of: int | None
    reproductions: list[int]


class WindowInfo(_Record):
    """One window of an online run: its prequential score (before training on it), then its
    training and validation metrics, and the offsets it covers."""

    window: int
    messages: int
    malformed: int
    prequential: dict[str, Any]
    train: dict[str, Any]
    val: dict[str, Any]
    offsets: dict[str, Any]
    version: int | None
    created_at: datetime


class VersionInfo(_Record):
    """A published version of an online result."""

    result_id: int
    version: int
    window: int
    metrics: dict[str, Any]
    offsets: dict[str, Any]
    weights_uri: str
    created_at: datetime

    @field_validator("weights_uri")
    @classmethod
    def _public(cls, uri: str) -> str:  # (shown, never with a password)
        return public_url(uri)


class DeploymentInfo(_Record):
    """A configuration deployed for training, with one result per model."""

    id: int
    configuration_id: int
    configuration_name: str
    batch_size: int
    kwargs: dict[str, Any]
    gpu_fraction: float
    confusion_matrix: bool
    shuffle_seed: int | None
    on_malformed: str
    online: dict[str, Any] | None = None
    job_id: str | None
    datasource_id: int | None
    created_at: datetime
    results: list[ResultInfo]

    @classmethod
    def of(cls, d: Any) -> DeploymentInfo:
        fields = {k: getattr(d, k) for k in cls.model_fields if hasattr(d, k)}
        fields.update(
            configuration_name=d.configuration.name, results=[ResultInfo.of(r) for r in d.results]
        )
        return cls(**fields)

    @property
    def done(self) -> bool:
        return all(r.done for r in self.results)


class DatasourceInfo(_Record):
    """A control message as stored: the stream it names, or why it was refused."""

    id: int
    deployment_id: int | None
    status: str
    error: str | None
    topic: str
    input_format: str
    input_config: dict[str, Any]
    description: str
    validation_rate: float
    test_rate: float
    total_msg: int
    malformed_count: int
    source_topic: str
    source_partition: int
    source_offset: int
    message: dict[str, Any]
    created_at: datetime
    expired: str | None = None
    """Why Kafka no longer holds its data (retention deleted it, or its topic), as checked
    when it was read; it cannot be trained on again then."""


class InferenceInfo(_Record):
    """A trained model served over Kafka topics (and HTTP), with its live figures."""

    id: int
    result_id: int
    model_name: str
    status: str
    error: str | None
    input_topic: str
    output_topic: str
    input_format: str
    input_config: dict[str, Any]
    replicas: int
    min_replicas: int | None
    max_replicas: int | None
    gpu_fraction: float
    batch_size: int
    max_wait_ms: float
    version: int | None = None  # an online result's version, pinned (follow: None)
    follow: bool = False  # swaps to each newly published version
    exactly_once: bool = False  # outputs and offsets in Kafka transactions
    created_at: datetime
    # Summed over the ingress replicas that reported in the last 30 s:
    live_replicas: int = 0
    consumed: int = 0
    predicted: int = 0
    dead_letters: int = 0
    lag: int = 0
    msgs_per_s: float = 0.0
    # With ``live``: the replicas Serve wants but Ray cannot place, and what they wait for.
    waiting: str | None = None

    @property
    def route(self) -> str:
        return f"/inference/{self.id}"


class Prediction(_Record):
    """One message of an inference's output topic (or dead-letter topic), as read by a tap."""

    partition: int
    offset: int
    timestamp_ms: int
    key: str | None
    values: Any = None
    error: str | None = None
    headers: dict[str, str]


class TuneInfo(_Record):
    """A Ray Tune search over one model's hyper-parameters, with its trials as results."""

    id: int
    model_id: int
    model_name: str
    datasource_id: int
    space: dict[str, Any]
    metric: str
    mode: str
    num_samples: int
    status: str
    error: str | None
    best_result_id: int | None
    trials: list[ResultInfo]
    created_at: datetime
    updated_at: datetime

    @classmethod
    def of(cls, t: Any) -> TuneInfo:
        fields = {k: getattr(t, k) for k in cls.model_fields if hasattr(t, k)}
        trials = [ResultInfo.of(r) for r in t.results]
        best = next((r.id for r in trials if r.best), None)
        fields.update(model_name=t.model.name, trials=trials, best_result_id=best)
        return cls(**fields)

    @property
    def done(self) -> bool:
        return self.status != "running"
