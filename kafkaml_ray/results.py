"""Finding and comparing results by what they came from and what they reached: the filter
of `Client.list_results` (`ResultFilter`, with the parsers the command line and the panel
share) and the side-by-side rows of a comparison (`compare`)."""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.schemas import ResultInfo

__all__ = ["ResultFilter", "param_filter", "metric_filter", "compare", "topics"]


def topics(ranges: str) -> list[str]:
    """The topic names in a datasource's ranges (``topic:partition:start:end,...``; Kafka
    topic names hold no ``:``), in order, once each.

    >>> topics("digits:0:0:900,digits:1:0:897,extra:0:5:9")
    ['digits', 'extra']
    """
    return list(dict.fromkeys(r.split(":", 1)[0] for r in ranges.split(",") if r))


class ResultFilter(BaseModel):
    """Which results to list (`Client.list_results`); every field given must match.

    ``params`` match a result's training arguments or a trial's hyper-parameters (``{"lr":
    0.01}``; numbers equal as numbers); ``metrics`` are ranges ``{"test_accuracy": (0.9,
    None)}``, either end open (names as in `ResultInfo.metric`); ``model`` is a name;
    ``topic`` is a topic the datasource read; ``text`` is found in the notes or tags.
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    deployment_id: int | None = None
    datasource_id: int | None = None
    topic: str | None = None
    model: str | None = None
    code_version: int | None = None
    framework: str | None = None
    status: Literal["waiting", "training", "finished", "failed", "stopped"] | None = None
    params: dict[str, Any] = {}
    metrics: dict[str, tuple[float | None, float | None]] = {}
    tag: str | None = None
    text: str | None = None
    tune_id: int | None = None

    def matches(self, r: ResultInfo) -> bool:
        ranges = r.lineage.datasource.topic if r.lineage else ""
        checks = [
            self.deployment_id is None or r.deployment_id == self.deployment_id,
            self.datasource_id is None or r.datasource_id == self.datasource_id,
            self.topic is None or self.topic in topics(ranges),
            self.model is None or r.model_name == self.model,
            self.code_version is None or r.model_version == self.code_version,
            self.framework is None or r.framework == self.framework,
            self.status is None or r.status == self.status,
            self.tag is None or self.tag in r.tags,
            self.text is None or self.text.lower() in (r.notes + " " + " ".join(r.tags)).lower(),
            self.tune_id is None or r.tune_id == self.tune_id,
        ]
        params = r.params or r.hyperparameters
        checks += [k in params and _same(params[k], v) for k, v in self.params.items()]
        for name, (low, high) in self.metrics.items():
            value = r.metric(name)
            checks.append(
                isinstance(value, int | float)
                and (low is None or value >= low)
                and (high is None or value <= high)
            )
        return all(checks)


def param_filter(text: str) -> tuple[str, Any]:
    """``NAME=VALUE`` as a `ResultFilter` parameter; the value is read as JSON if it is
    JSON, else kept as text.

    >>> param_filter("lr=0.01"), param_filter("optimizer = adam")
    (('lr', 0.01), ('optimizer', 'adam'))
    """
    import json

    key, sep, value = text.partition("=")
    if not sep or not key.strip():
        raise InvalidInput(f"parameter {text!r}: expected NAME=VALUE, e.g. lr=0.01")
    try:
        return key.strip(), json.loads(value)
    except ValueError:
        return key.strip(), value.strip()


def metric_filter(text: str) -> tuple[str, tuple[float | None, float | None]]:
    """``NAME>=X``, ``NAME<=X`` or ``NAME=LOW..HIGH`` as a `ResultFilter` metric range
    (``>`` and ``<`` are read as ``>=`` and ``<=``).

    >>> metric_filter("test_accuracy>=0.9"), metric_filter("val_loss=..0.5")
    (('test_accuracy', (0.9, None)), ('val_loss', (None, 0.5)))
    """
    import re

    m = re.fullmatch(r"\s*([A-Za-z_][\w.-]*)\s*(>=|<=|>|<|=)\s*(\S+)\s*", text)
    try:
        if m and m[2] == "=" and ".." in m[3]:
            low, high = (float(x) if x else None for x in m[3].split("..", 1))
            return m[1], (low, high)
        if m and m[2] != "=":
            bound = float(m[3])
            return m[1], ((bound, None) if m[2].startswith(">") else (None, bound))
    except ValueError:
        pass
    raise InvalidInput(
        f"metric range {text!r}: expected NAME>=X, NAME<=X or NAME=LOW..HIGH, "
        "e.g. test_accuracy>=0.9"
    )


def _same(a: Any, b: Any) -> bool:
    numbers = (int, float)
    if isinstance(a, numbers) and isinstance(b, numbers) and not isinstance(a, bool):
        return float(a) == float(b)
    return a == b


def compare(results: list[ResultInfo]) -> list[dict[str, Any]]:
    """Results side by side, one row per thing they came from or reached: ``{"kind"
    ("source", "param" or "metric"), "name", "values" (one per result, None where it has
    none), "differs"}``; where they came from and their parameters first, then the metrics
    (``test_``, ``val_``, ``train_``).

    >>> a = ResultInfo.model_construct(model_name="m", model_version=1, datasource_id=3,
    ...     params={"lr": 0.1, "epochs": 5}, test_metrics={"accuracy": 0.9}, val_metrics={},
    ...     train_metrics={}, training_time_s=2.0)
    >>> b = a.model_copy(update={"params": {"lr": 0.01, "epochs": 5}})
    >>> [(row["name"], row["differs"]) for row in compare([a, b]) if row["kind"] == "param"]
    [('epochs', False), ('lr', True)]
    """

    def row(kind: str, name: str, values: list[Any]) -> dict[str, Any]:
        differs = len({repr(v) for v in values}) > 1
        return {"kind": kind, "name": name, "values": values, "differs": differs}

    def keys(dicts: list[dict[str, Any]]) -> list[str]:
        return sorted({k for d in dicts for k in d})

    rows = [
        row("source", "model", [r.model_name for r in results]),
        row("source", "code version", [r.model_version for r in results]),
        row("source", "datasource", [r.datasource_id for r in results]),
    ]
    params = [r.params or r.hyperparameters or {} for r in results]
    rows += [row("param", k, [p.get(k) for p in params]) for k in keys(params)]
    for subset in ("test", "val", "train"):
        metrics = [getattr(r, f"{subset}_metrics") or {} for r in results]
        rows += [row("metric", f"{subset}_{k}", [m.get(k) for m in metrics]) for k in keys(metrics)]
    rows.append(row("metric", "training time (s)", [r.training_time_s for r in results]))
    return rows
