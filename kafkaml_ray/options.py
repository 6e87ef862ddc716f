"""The options of a deployment, one pydantic model each (`TrainingOptions`,
`OnlineOptions`, `ServingOptions`): the API checks them, the command line's flags are made
from them (`kafkaml_ray.cli.kit.model_options`), the store keeps them and the
KubeRay manifests are rendered from them."""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError, model_validator

from kafkaml_ray.errors import InvalidInput

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "ServingOptions",
    "TrainingOptions",
    "OnlineOptions",
    "checked",
]

#: Samples an inference predicts together (an ingress chunk, a Predictor batch): the one
#: default of the API, the CLI, the store and the manifests.
DEFAULT_BATCH_SIZE = 512


def checked(model: type[BaseModel], **values: Any) -> Any:
    """``model(**values)``, or `InvalidInput` naming the first field that is wrong.

    >>> checked(ServingOptions, replicas=0)
    Traceback (most recent call last):
    ...
    kafkaml_ray.errors.InvalidInput: replicas: Input should be greater than or equal to 1
    """
    try:
        return model(**values)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where + ': ' if where else ''}{first['msg']}") from None


class TrainingOptions(BaseModel, frozen=True, extra="forbid"):
    """How a deployment trains its models: one model for the API and the ``train deploy``
    options (the per-framework training arguments come apart, as text to parse)."""

    batch_size: int = Field(32, ge=1, description="Samples per training step.")
    gpu_fraction: float = Field(
        0.0, ge=0, le=8, description="GPU per model, e.g. 0.25 (fractional GPUs)."
    )
    confusion_matrix: bool = Field(True, description="Draw the test set's confusion matrix.")
    shuffle_seed: int | None = Field(
        None, description="Shuffle before splitting (else test = newest)."
    )
    on_malformed: Literal["fail", "skip"] = Field(
        "fail", description="Malformed messages: fail the read, or skip and count them."
    )


class OnlineOptions(BaseModel, frozen=True, extra="forbid"):
    """How an online deployment trains (Kafka-ML's names where it has them): window after
    window from an unbounded stream, each scored before it is trained on, publishing a new
    version of the result when ``monitoring_metric`` improves by ``improvement``.

    >>> OnlineOptions(window_messages=256).window_seconds
    10.0
    """

    stream_timeout_s: float = Field(
        60.0, description="End after no data for this long (seconds); -1: never."
    )
    window_messages: int = Field(1024, ge=1, description="A window's most messages...")
    window_seconds: float = Field(10.0, gt=0, description="...or seconds, whichever first.")
    validation_rate: float | None = Field(
        None, ge=0, lt=1, description="Each window's validation share (default: the stream's)."
    )
    monitoring_metric: str = Field(
        "loss",
        min_length=1,
        description="The metric whose improvement publishes a version (Kafka-ML's val_ names too).",
    )
    change: Literal["up", "down"] | None = Field(
        None, description="Which way is better for that metric (default: loss down, else up)."
    )
    improvement: float = Field(0.05, ge=0, description="The smallest gain that publishes.")
    max_windows: int | None = Field(None, ge=1, description="End after this many windows.")
    max_duration_s: float | None = Field(None, gt=0, description="End after this long.")
    checkpoint_s: float = Field(
        1.0,
        ge=0,
        description="Checkpoint and record the windows trained at most this often (seconds; "
        "0: after each), and when the data pauses: a crash trains those since the last "
        "checkpoint again, and a version is published at the checkpoint after its window.",
    )

    @model_validator(mode="before")
    @classmethod
    def _metric(cls, data: Any) -> Any:
        """Kafka-ML's (and our Tune's) ``val_`` names are the windows' own (each window's
        metric is on its held-out part); ``change`` follows the metric when not given.

        >>> o = OnlineOptions(monitoring_metric="val_accuracy")
        >>> (o.monitoring_metric, o.change, OnlineOptions(monitoring_metric="mae").change)
        ('accuracy', 'up', 'down')
        """
        if isinstance(data, dict) and isinstance(data.get("monitoring_metric", "loss"), str):
            data = dict(data)
            metric = data.get("monitoring_metric", "loss").removeprefix("val_")
            data["monitoring_metric"] = metric
            if data.get("change") is None:
                data["change"] = "down" if _LOWER_IS_BETTER.search(metric.lower()) else "up"
        return data

    @model_validator(mode="after")
    def _check(self) -> OnlineOptions:
        if self.stream_timeout_s <= 0 and self.stream_timeout_s != -1:
            raise ValueError("stream_timeout_s must be above 0, or -1 (never)")
        return self


#: Metrics that are better lower (losses and errors); any other is better higher.
_LOWER_IS_BETTER = re.compile(r"loss|error|mae|mse|mape|hinge|crossentropy|divergence")


class ServingOptions(BaseModel, frozen=True, extra="forbid"):
    """How an inference is served: one model for the API, the ``infer deploy`` options, the
    store row and the RayService (`kafkaml_ray.serve.options` turns it into Serve options).

    Both deployments (ingress and predictor) get ``replicas`` replicas, or autoscale between
    ``min_replicas`` and ``max_replicas`` when both are set, starting at ``replicas`` (kept
    within the bounds).
    """

    replicas: int = Field(1, ge=1, description="Static replicas.")
    min_replicas: int | None = Field(None, ge=1, description="Autoscale on lag from this...")
    max_replicas: int | None = Field(None, ge=1, description="...to this (<= partitions).")
    gpu_fraction: float = Field(
        0.0, ge=0, description="GPU fraction per predictor replica, e.g. 0.25."
    )
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1, description="Samples predicted together.")
    max_wait_ms: float = Field(0.0, ge=0, description="How long a batch waits to fill.")
    exactly_once: bool = Field(
        False,
        description="Outputs, dead letters and input offsets in one Kafka transaction: "
        "read_committed readers see each input's prediction exactly once.",
    )

    @model_validator(mode="after")
    def _check(self) -> ServingOptions:
        lo, hi = self.min_replicas, self.max_replicas
        if (lo is None) != (hi is None):
            raise ValueError("autoscaling needs both min_replicas and max_replicas")
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_replicas ({lo}) is above max_replicas ({hi})")
        if self.gpu_fraction > 1 and not self.gpu_fraction.is_integer():
            raise ValueError("a GPU share above 1 must be a whole number of GPUs")
        return self

    @classmethod
    def of(cls, row: Any) -> ServingOptions:
        """The options of an `~kafkaml_ray.store.Inference` row (one not stored yet has
        None where the store's default will go: the option's default then)."""
        values = {name: getattr(row, name) for name in cls.model_fields}
        keep = {k for k, f in cls.model_fields.items() if f.default is None}  # (None is valid)
        return cls(**{k: v for k, v in values.items() if v is not None or k in keep})
