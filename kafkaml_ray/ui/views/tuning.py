"""Tuning: start a Ray Tune search over a model's hyper-parameters on a stored datasource,
and follow its trials (each a training result) with the best one marked."""

from __future__ import annotations

import json
from typing import Any

import pandas as pd
import streamlit as st

from kafkaml_ray.schemas import DatasourceInfo, ModelInfo, TuneInfo
from kafkaml_ray.train.tune import SAMPLERS, check_space, metric_value
from kafkaml_ray.ui import common
from kafkaml_ray.ui.charts import curve_chart, curve_frame, result_label

EXAMPLE_SPACE = {
    "lr": {"loguniform": [0.0001, 0.01]},
    "batch_size": {"choice": [16, 32, 64]},
    "epochs": 5,
}
SPACE_HELP = (
    "A JSON object: each key a training argument (lr, epochs, batch_size, seed, shuffle), "
    f'each value a sampler ({", ".join(SAMPLERS)}: e.g. {{"choice": [16, 32]}}, '
    '{"loguniform": [1e-4, 1e-1]}) or a fixed value. A scikit-learn or XGBoost model\'s '
    'own parameters are keys "model.<parameter>", as set_params names them '
    '("model.alpha", "model.max_depth", "model.sgdclassifier__alpha" in a pipeline).'
)


def _start(models: list[ModelInfo], sources: list[DatasourceInfo]) -> None:
    st.subheader("Start a search")
    usable = common.stored_streams(sources)
    if not models or not usable:
        st.info(
            "A search needs a registered model and a stored data stream: register one on "
            "the Models page and send data for a training first."
        )
        return
    with st.form("tune_start"):
        left, right = st.columns(2)
        with left:
            model = common.pick(
                "Model",
                models,
                "tune_model",
                lambda m: f"{m.id} · {m.name} ({common.FRAMEWORK_NAMES[m.framework]})",
            )
        with right:
            ds = common.pick_stream(usable, "tune_datasource")
        space_text = st.text_area(
            "Search space (JSON)",
            json.dumps(EXAMPLE_SPACE, indent=2),
            key="tune_space",
            height=150,
            help=SPACE_HELP,
        )
        cols = st.columns(4)
        metric = cols[0].text_input(
            "Metric",
            "val_accuracy",
            key="tune_metric",
            help="A metric the model reports; val_<name> for validation (val_loss, ...).",
        )
        mode = cols[1].radio("Best is", ["max", "min"], horizontal=True, key="tune_mode")
        samples = cols[2].number_input("Samples", 1, 10_000, 4, key="tune_samples")
        concurrent = cols[3].number_input(
            "Trials at once", 1, 10_000, 2, key="tune_concurrent", help="One CPU each."
        )
        start = st.form_submit_button("Start the search", type="primary", icon=":material/tune:")
    if not start or model is None or ds is None:
        return
    space = common.json_field(space_text or "", "search space", check_space)
    if space is None or not common.need("ray", "start the search"):
        return
    common.act(
        "Starting the Ray Tune search...",
        common.client().tune,
        model.id,
        ds.id,
        space,
        metric=metric.strip(),
        mode=mode,
        num_samples=int(samples),
        max_concurrent_trials=int(concurrent),
        then=lambda run: (
            f"Started search {run.id}: {run.num_samples} sample(s) of {run.model_name} on "
            f"datasource {run.datasource_id}, best by {run.metric} ({run.mode})."
        ),
        reset=lambda run: {"tune_run": run.id},
    )


def _label(t: TuneInfo) -> str:
    return f"{t.id} · {t.model_name} by {t.metric} ({t.status})"


def _runs(runs: list[TuneInfo]) -> None:
    st.dataframe(
        [
            {
                "search": t.id,
                "model": t.model_name,
                "datasource": t.datasource_id,
                "status": t.status,
                "metric": f"{t.metric} ({t.mode})",
                "trials": f"{sum(r.done for r in t.trials)} done of {len(t.trials)}",
                "best": _best_text(t),
                "started": common.when(t.created_at),
                "error": t.error or "",
            }
            for t in reversed(runs)
        ],
        hide_index=True,
    )


def _best_text(t: TuneInfo) -> str:
    best = next((r for r in t.trials if r.id == t.best_result_id), None)
    if best is None:
        return ""
    value = metric_value(best, t.metric)
    return f"result {best.id}: {t.metric} {value:.4g}" if value is not None else str(best.id)


def _trials(t: TuneInfo) -> None:
    if t.status == "failed":
        st.error(f"Failed: {t.error}", icon=":material/error:")
    elif t.status == "running":
        st.info(f"Running: {sum(r.done for r in t.trials)} of the trials so far are done.")
    elif t.status == "stopped":
        st.warning("Stopped by the user: the best finished trial is marked.")
    st.caption(f"Search space: `{json.dumps(t.space)}`")
    if not t.trials:
        st.info("No trial has started yet.")
        return
    sign = -1 if t.mode == "max" else 1
    ranked = sorted(
        t.trials,
        key=lambda r: (
            (v := metric_value(r, t.metric)) is None,
            sign * (v or 0.0),
            r.id,
        ),
    )
    keys = sorted({k for r in t.trials for k in r.hyperparameters})
    rows = []
    for r in ranked:
        row: dict[str, Any] = {
            "best": "★" if r.id == t.best_result_id else "",
            "result": r.id,
            "status": r.status,
            t.metric: metric_value(r, t.metric),
        }
        row.update({k: r.hyperparameters.get(k) for k in keys})
        row.update(
            {
                "epochs done": len(r.history),
                "validation": common.metrics_text(r.val_metrics),
                "test": common.metrics_text(r.test_metrics),
                "training time (s)": r.training_time_s,
                "error": r.error or "",
            }
        )
        rows.append(row)
    st.dataframe(
        pd.DataFrame(rows),
        hide_index=True,
        column_config={
            t.metric: st.column_config.NumberColumn(format="%.4f"),
            "lr": st.column_config.NumberColumn(format="%.2e"),
            "training time (s)": st.column_config.NumberColumn(format="%.1f"),
        },
    )
    _curves(t)
    best = next((r for r in t.trials if r.id == t.best_result_id), None)
    charts, deploy, stop, delete = st.columns([2, 2, 1, 1])
    if charts.button("Learning curves of the trials", key="tune_charts"):
        common.prefill("charts", charts_results=[r.id for r in t.trials if r.history])
    if best is not None and deploy.button(
        "Deploy the best for inference", key="tune_deploy", type="primary"
    ):
        common.prefill("inference", infer_result=best.id)
    if stop.button(
        "Stop", key="tune_stop", disabled=t.done, icon=":material/stop:"
    ) and common.need("ray", "stop the search"):
        common.act(
            "Stopping the search...",
            common.client().stop_tune,
            t.id,
            then=f"Stopped search {t.id}.",
        )
    if delete.button("Delete", key="tune_delete", disabled=not t.done, icon=":material/delete:"):
        common.act(
            "Deleting the search...",
            common.client().delete_tune,
            t.id,
            then=f"Deleted search {t.id} and its {len(t.trials)} trial result(s).",
        )


def _curves(t: TuneInfo) -> None:
    """The searched metric of every trial, epoch by epoch."""
    subset, name = (
        ("validation", t.metric[4:])
        if t.metric.startswith("val_")
        else (
            "training",
            t.metric,
        )
    )
    frame = curve_frame([r for r in t.trials if r.history])
    frame = frame[(frame["metric"] == name) & (frame["subset"] == subset)]
    if frame.empty:
        return
    frame = frame.assign(result=[_trial_label(t, r) for r in frame["result"]])
    st.altair_chart(curve_chart(frame, name).properties(title=t.metric), width="stretch")


def _trial_label(t: TuneInfo, label: str) -> str:
    best = next((r for r in t.trials if r.id == t.best_result_id), None)
    return f"{label} ★" if best is not None and label == result_label(best) else label


def render() -> None:
    common.header("Tuning", "Ray Tune searches over a model's hyper-parameters.")
    client = common.client()
    _start(client.list_models(), client.list_datasources())
    st.subheader("Searches")
    left, right = st.columns([1, 5], vertical_alignment="center")
    left.button("Refresh", key="tune_refresh")
    follow = right.toggle("Follow (every 2 s)", key="tune_follow")

    @st.fragment(run_every=2 if follow else None)
    def searches() -> None:
        runs = common.client().list_tunes()
        if not runs:
            st.info("No searches yet: start one above.")
            return
        _runs(runs)
        t = common.pick_newest("Search", runs, "tune_run", _label)
        if t is not None:
            _trials(t)

    searches()


render()
