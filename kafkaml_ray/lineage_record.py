"""The lineage record of a result: where it came from, as `kafkaml_ray.lineage.record`
writes it when its run starts and `kafkaml_ray.lineage.saved` completes it when its weights
are saved. Frozen and typed: the store keeps its JSON (`Lineage.as_json`), `Lineage.of`
reads it back, and `kafkaml_ray.schemas.ResultInfo.lineage` carries it."""

from __future__ import annotations

import warnings
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = [
    "Lineage",
    "DatasourceRef",
    "ControlRef",
    "SplitRef",
    "CodeRef",
    "DeploymentRef",
    "SearchRef",
    "WeightsRef",
]


class _Part(BaseModel):
    model_config = ConfigDict(frozen=True, extra="ignore")


class ControlRef(_Part):
    """Where the control message that announced a datasource was read."""

    topic: str | None = None
    partition: int | None = None
    offset: int | None = None
    timestamp_ms: int | None = None


class DatasourceRef(_Part):
    """A datasource as a result trained on it: its Kafka ranges, format and counts."""

    id: int
    topic: str
    format: str = "RAW"
    config: dict[str, Any] = {}
    messages: int | None = None
    malformed: int = 0
    validation_rate: float = 0.0
    test_rate: float = 0.0
    incremental: bool = False
    description: str | None = None
    control: ControlRef | None = None


class SplitRef(_Part):
    """How the stream was split: the shuffle seed, malformed messages, the sizes."""

    shuffle_seed: int | None = None
    on_malformed: str = "skip"
    sizes: dict[str, int] = {}


class CodeRef(_Part):
    """The model code a result trained with, kept whole so it outlives the model."""

    model_id: int | None = None
    model: str | None = None
    version: int | None = None
    sha256: str | None = None
    imports: str | None = None
    code: str | None = None


class DeploymentRef(_Part):
    id: int
    configuration: str | None = None
    gpu_fraction: float | None = None
    confusion_matrix: bool | None = None
    online: dict[str, Any] | None = None


class SearchRef(_Part):
    id: int
    metric: str | None = None
    mode: str | None = None
    space: dict[str, Any] = {}


class WeightsRef(_Part):
    uri: str
    sha256: str
    bytes: int


class Lineage(_Part):
    """Where a result came from (`kafkaml_ray.lineage.record`), completed when its weights
    are saved (`kafkaml_ray.lineage.saved`). The store keeps it as JSON (`as_json`);
    `of` reads it back.

    >>> lin = Lineage(recorded_at="2026-12-07T10:00:00+00:00", framework="pytorch",
    ...     datasource=DatasourceRef(id=3, topic="digits:0:0:900"), code=CodeRef(version=2))
    >>> Lineage.of(lin.as_json()) == lin, lin.with_split(sizes={"train": 800}).split.sizes
    (True, {'train': 800})
    """

    recorded_at: str
    datasource: DatasourceRef
    split: SplitRef = SplitRef()
    code: CodeRef = CodeRef()
    framework: str
    #: training arguments and batch size, or a trial's hyper-parameters
    params: dict[str, Any] = {}
    val_params: dict[str, Any] = {}
    deployment: DeploymentRef | None = None
    tune: SearchRef | None = None
    reproduction_of: int | None = None
    #: set when the weights are saved, with the library versions that trained them
    weights: WeightsRef | None = None
    libraries: dict[str, str] = {}

    @classmethod
    def of(cls, value: Lineage | dict[str, Any] | None) -> Lineage | None:
        """The record a row keeps (None for a row without one)."""
        if value is None or isinstance(value, Lineage):
            return value
        return cls.model_validate(value) if value else None

    def as_json(self) -> dict[str, Any]:
        """As the store keeps it."""
        return self.model_dump(mode="json")

    def with_split(self, *, sizes: dict[str, int], malformed: int | None = None) -> Lineage:
        """The record once its stream is split: the sizes, and the malformed messages."""
        update: dict[str, Any] = {"split": self.split.model_copy(update={"sizes": sizes})}
        if malformed is not None:
            update["datasource"] = self.datasource.model_copy(update={"malformed": malformed})
        return self.model_copy(update=update)

    def with_params(self, params: dict[str, Any]) -> Lineage:
        return self.model_copy(update={"params": dict(params)})

    # Scripts written when the record was a dict (``r.lineage["datasource"]["topic"]``) still
    # run: reading it by key gives the stored JSON's part, with a warning to read attributes.
    def __getitem__(self, key: str) -> Any:
        warnings.warn(
            f"result.lineage[{key!r}] is deprecated: the record is typed, read "
            f"result.lineage.{key}",
            DeprecationWarning,
            stacklevel=2,
        )
        return self.as_json()[key]

    def get(self, key: str, default: Any = None) -> Any:
        """As ``dict.get`` on the stored JSON (deprecated: read the attributes)."""
        return self[key] if key in type(self).model_fields else default
