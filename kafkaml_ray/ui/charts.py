"""Altair charts of the control panel: learning curves (over epochs, or an online run's over
windows), confusion matrices, predictions.

Pure functions from Client records to charts (no Streamlit), so they are tested alone.

>>> from kafkaml_ray.ui.charts import confusion_frame
>>> confusion_frame([[3, 1], [0, 4]]).to_dict("records")[1]
{'true': 0, 'predicted': 1, 'count': 1, 'share': 0.25}
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from typing import Any

import altair as alt
import pandas as pd

from kafkaml_ray.schemas import ResultInfo, VersionInfo, WindowInfo

__all__ = [
    "SUBSETS",
    "curve_frame",
    "curve_chart",
    "window_frame",
    "window_chart",
    "version_frame",
    "version_chart",
    "phase_frame",
    "phase_chart",
    "confusion_frame",
    "confusion_chart",
    "class_chart",
    "classify",
    "result_label",
]

SUBSETS = {"train": "training", "val": "validation"}
"""History keys and how the charts name them."""


def result_label(r: ResultInfo) -> str:
    """How a result is named in legends and lists: ``"3 · digits-cnn (finished)"``."""
    return f"{r.id} · {r.model_name}"


def curve_frame(results: Sequence[ResultInfo]) -> pd.DataFrame:
    """The learning curves of ``results`` in long form: one row per result, metric, subset
    (training, validation) and epoch, with its ``value``."""
    rows = [
        {
            "result": result_label(r),
            "metric": metric,
            "subset": SUBSETS[subset],
            "epoch": int(entry.get("epoch", n + 1)),
            "value": float(value),
        }
        for r in results
        for n, entry in enumerate(r.history)
        for subset in SUBSETS
        for metric, value in (entry.get(subset) or {}).items()
        if isinstance(value, int | float)
    ]
    return pd.DataFrame(rows, columns=["result", "metric", "subset", "epoch", "value"])


def curve_chart(frame: pd.DataFrame, metric: str) -> alt.Chart:
    """One metric's learning curves: a line per result and subset, a point per epoch."""
    data = frame[frame["metric"] == metric]
    return (
        alt.Chart(data, title=metric)
        .mark_line(point=True)
        .encode(
            x=alt.X("epoch:Q", title="epoch", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color=alt.Color(
                "result:N",
                title="result",
                scale=alt.Scale(scheme="tableau10"),
                legend=alt.Legend(symbolType="stroke", symbolStrokeWidth=3),
            ),
            # Solid training, dashed validation (the page says so; a dash legend is unclear).
            strokeDash=alt.StrokeDash(
                "subset:N",
                scale=alt.Scale(domain=list(SUBSETS.values()), range=[[1, 0], [6, 3]]),
                legend=None,
            ),
            tooltip=[
                alt.Tooltip("result:N"),
                alt.Tooltip("subset:N"),
                alt.Tooltip("epoch:Q", format="d"),
                alt.Tooltip("value:Q", format=".4f"),
            ],
        )
        .properties(height=280)
    )


def window_frame(windows: Sequence[WindowInfo]) -> pd.DataFrame:
    """An online run's windows in long form: one row per window, metric and subset
    (``prequential``: scored before training on it; ``validation``: after), with the
    version the window published (or None).

    >>> from datetime import datetime
    >>> w = WindowInfo(window=1, messages=9, malformed=0, prequential={"accuracy": 0.1},
    ...     train={}, val={"accuracy": 0.6}, offsets={}, version=1, created_at=datetime.now())
    >>> window_frame([w])[["window", "subset", "value", "version"]].to_dict("records")
    [{'window': 1, 'subset': 'prequential', 'value': 0.1, 'version': 1}, \
{'window': 1, 'subset': 'validation', 'value': 0.6, 'version': 1}]
    """
    rows = [
        {
            "window": w.window,
            "time": w.created_at,
            "metric": metric,
            "subset": subset,
            "value": float(value),
            "version": w.version,
        }
        for w in windows
        for subset, metrics in (("prequential", w.prequential), ("validation", w.val))
        for metric, value in metrics.items()
        if isinstance(value, int | float) and math.isfinite(value)
    ]
    columns = ["window", "time", "metric", "subset", "value", "version"]
    return pd.DataFrame(rows, columns=columns)


def window_chart(frame: pd.DataFrame, metric: str) -> alt.LayerChart:
    """One metric over an online run's windows (prequential solid, validation dashed), with
    a rule and label at each window that published a version."""
    data = frame[frame["metric"] == metric]
    lines = (
        alt.Chart(data)
        .mark_line(point=True)
        .encode(
            x=alt.X("window:Q", title="window", axis=alt.Axis(tickMinStep=1, format="d")),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            strokeDash=alt.StrokeDash(
                "subset:N",
                scale=alt.Scale(domain=["prequential", "validation"], range=[[1, 0], [6, 3]]),
                legend=alt.Legend(title=None, orient="bottom"),
            ),
            tooltip=[
                alt.Tooltip("window:Q", format="d"),
                alt.Tooltip("subset:N"),
                alt.Tooltip("value:Q", format=".4f"),
                alt.Tooltip("time:T", format="%H:%M:%S"),
            ],
        )
    )
    published = data[data["version"].notna()].drop_duplicates("window")
    rules = (
        alt.Chart(published)
        .mark_rule(color="#e45756", strokeWidth=1.5)
        .encode(x="window:Q", tooltip=[alt.Tooltip("version:Q", format="d")])
    )
    labels = (
        alt.Chart(published)
        .mark_text(align="left", dx=3, dy=-6, color="#e45756")
        .encode(x="window:Q", y=alt.value(0), text=alt.Text("version:Q", format="d"))
    )
    return alt.layer(lines, rules, labels).properties(title=metric, height=300)


def version_frame(versions: Sequence[VersionInfo]) -> pd.DataFrame:
    """An online result's versions compared: per version, the monitored metric of the model
    it published (``this version``) and of the version before it, scored on the same
    held-out window (``the one before``; none for version 1).

    >>> from datetime import datetime
    >>> v = VersionInfo(result_id=1, version=2, window=5, metrics={"monitored": 0.8,
    ...     "previous": 0.7}, offsets={}, weights_uri="", created_at=datetime.now())
    >>> version_frame([v])[["version", "model", "value"]].to_dict("records")
    [{'version': 2, 'model': 'this version', 'value': 0.8}, \
{'version': 2, 'model': 'the one before', 'value': 0.7}]
    """
    rows = [
        {"version": v.version, "window": v.window, "model": model, "value": float(value)}
        for v in versions
        for model, value in (
            ("this version", v.metrics.get("monitored")),
            ("the one before", v.metrics.get("previous")),
        )
        if isinstance(value, int | float) and math.isfinite(value)
    ]
    return pd.DataFrame(rows, columns=["version", "window", "model", "value"])


def version_chart(frame: pd.DataFrame, metric: str = "monitored metric") -> alt.Chart:
    """Each version's monitored metric beside the version it replaced, on the same data:
    what each publication gained."""
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            x=alt.X("version:O", title="version"),
            xOffset=alt.XOffset("model:N", sort=["the one before", "this version"]),
            y=alt.Y("value:Q", title=metric, scale=alt.Scale(zero=False)),
            color=alt.Color(
                "model:N",
                sort=["the one before", "this version"],
                legend=alt.Legend(title=None, orient="bottom"),
            ),
            tooltip=[
                alt.Tooltip("version:O"),
                alt.Tooltip("window:Q", title="after window", format="d"),
                alt.Tooltip("model:N"),
                alt.Tooltip("value:Q", format=".4f"),
            ],
        )
        .properties(title="Versions compared on the same held-out data", height=260)
    )


def phase_frame(results: Sequence[ResultInfo]) -> pd.DataFrame:
    """Where each result's run spent its time: one row per result and phase, in order.

    >>> from datetime import datetime
    >>> r = ResultInfo(id=3, deployment_id=1, model_id=1, model_name="cnn", framework="pytorch",
    ...     status="finished", error=None, train_metrics={}, val_metrics={}, test_metrics={},
    ...     history=[], progress={}, confusion_matrix=None, training_time_s=1.0,
    ...     weights_uri=None, confusion_matrix_uri=None, hyperparameters={}, tune_id=None,
    ...     best=False, phases={"read": 1.5, "epochs": 3.0}, created_at=datetime.now(),
    ...     updated_at=datetime.now())
    >>> phase_frame([r])[["phase", "seconds", "order"]].to_dict("records")
    [{'phase': 'read', 'seconds': 1.5, 'order': 0}, {'phase': 'epochs', 'seconds': 3.0, 'order': 1}]
    """
    rows = [
        {"result": result_label(r), "phase": phase, "seconds": seconds, "order": i}
        for r in results
        for i, (phase, seconds) in enumerate(r.phases.items())
    ]
    return pd.DataFrame(rows, columns=["result", "phase", "seconds", "order"])


def phase_chart(frame: pd.DataFrame) -> alt.Chart:
    """Each result's run as one bar of its phases, in the order they ran."""
    return (
        alt.Chart(frame)
        .mark_bar()
        .encode(
            y=alt.Y("result:N", title=None),
            x=alt.X("sum(seconds):Q", title="seconds, from the control message to finished"),
            color=alt.Color(
                "phase:N",
                sort=alt.SortField("order"),
                legend=alt.Legend(title=None, orient="bottom", columns=4),
            ),
            order=alt.Order("order:Q"),
            tooltip=["result:N", "phase:N", alt.Tooltip("seconds:Q", format=".2f")],
        )
        .properties(title="Where the time went", height=alt.Step(28))
    )


def confusion_frame(matrix: Sequence[Sequence[int]]) -> pd.DataFrame:
    """A confusion matrix (rows: true class, columns: predicted) in long form, with each
    cell's ``share`` of its row (the recall on the diagonal)."""
    rows = []
    for true, row in enumerate(matrix):
        total = sum(row) or 1
        for predicted, count in enumerate(row):
            rows.append(
                {"true": true, "predicted": predicted, "count": int(count), "share": count / total}
            )
    return pd.DataFrame(rows, columns=["true", "predicted", "count", "share"])


def confusion_chart(
    matrix: Sequence[Sequence[int]], title: str = "", normalize: bool = False
) -> alt.LayerChart:
    """A heat map of a confusion matrix with the counts (or row shares) written in."""
    frame = confusion_frame(matrix)
    field, fmt = ("share", ".0%") if normalize else ("count", "d")
    high = float(frame[field].max() or 0) / 2
    size = max(240, min(560, 42 * len(matrix)))
    base = alt.Chart(frame).encode(
        x=alt.X("predicted:O", title="predicted class", axis=alt.Axis(labelAngle=0)),
        y=alt.Y("true:O", title="true class"),
    )
    cells = base.mark_rect().encode(
        color=alt.Color(
            f"{field}:Q",
            title="share of row" if normalize else "count",
            scale=alt.Scale(scheme="blues"),
        ),
        tooltip=[
            alt.Tooltip("true:O", title="true"),
            alt.Tooltip("predicted:O", title="predicted"),
            alt.Tooltip("count:Q", format="d"),
            alt.Tooltip("share:Q", format=".1%", title="share of row"),
        ],
    )
    text = base.mark_text(baseline="middle", fontSize=12).encode(
        text=alt.Text(f"{field}:Q", format=fmt),
        color=alt.condition(alt.datum[field] > high, alt.value("white"), alt.value("black")),
    )
    return alt.layer(cells, text).properties(title=title, width=size, height=size)


def class_chart(classes: Sequence[Any]) -> alt.Chart:
    """How often each class was predicted among some predictions."""
    frame = pd.Series(list(classes), name="class").value_counts().rename_axis("class")
    data = frame.reset_index(name="predictions")
    return (
        alt.Chart(data, title="predicted classes")
        .mark_bar()
        .encode(
            x=alt.X("class:O", title="class", axis=alt.Axis(labelAngle=0)),
            y=alt.Y("predictions:Q", title="predictions", axis=alt.Axis(tickMinStep=1, format="d")),
            tooltip=["class:O", "predictions:Q"],
        )
        .properties(height=220)
    )


def classify(values: Any) -> dict[str, Any]:
    """What a prediction says: for a classifier's scores (a flat list of two or more
    numbers) the ``class`` (argmax) and its ``confidence`` (the score itself when the
    scores are probabilities, else its softmax); ``values`` otherwise.

    >>> classify([0.1, 0.7, 0.2])
    {'class': 1, 'confidence': 0.7}
    >>> round(classify([[2.0, 0.0]])["confidence"], 3)
    0.881
    >>> classify([3.5])
    {'values': '[3.5]'}
    """
    flat = values
    if isinstance(flat, list) and len(flat) == 1 and isinstance(flat[0], list):
        flat = flat[0]  # a batch of one
    numbers = isinstance(flat, list) and all(
        isinstance(v, int | float) and not isinstance(v, bool) and math.isfinite(v) for v in flat
    )
    if not numbers or len(flat) < 2:
        return {"values": json.dumps(values)[:300]}
    best = max(range(len(flat)), key=flat.__getitem__)
    if all(0 <= v <= 1 for v in flat) and abs(sum(flat) - 1) < 1e-3:
        return {"class": best, "confidence": float(flat[best])}
    top = max(flat)
    exps = [math.exp(v - top) for v in flat]
    return {"class": best, "confidence": exps[best] / sum(exps)}
