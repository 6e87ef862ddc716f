"""Charts: learning curves per metric (training and validation, a point per epoch) of one
or several results, and a result's confusion matrix as a heat map."""

from __future__ import annotations

import streamlit as st

from kafkaml_ray.schemas import ResultInfo
from kafkaml_ray.ui import common
from kafkaml_ray.ui.charts import confusion_chart, curve_chart, curve_frame, result_label


def _curves(results: list[ResultInfo]) -> list[ResultInfo]:
    st.subheader("Learning curves")
    by_id = {r.id: r for r in results}
    if "charts_results" not in st.session_state:  # the latest finished one and its siblings
        latest = next((r for r in reversed(results) if r.status == "finished"), results[-1])
        st.session_state["charts_results"] = [
            r.id
            for r in results
            if r.id == latest.id
            or (latest.deployment_id is not None and r.deployment_id == latest.deployment_id)
            or (latest.tune_id is not None and r.tune_id == latest.tune_id)
        ]
    else:  # forget results deleted meanwhile
        st.session_state["charts_results"] = [
            i for i in st.session_state["charts_results"] if i in by_id
        ]
    chosen = st.multiselect(
        "Results",
        list(reversed(list(by_id))),
        format_func=lambda i: f"{result_label(by_id[i])} ({by_id[i].status})",
        key="charts_results",
    )
    picked = [by_id[i] for i in chosen]
    frame = curve_frame(picked)
    if frame.empty:
        st.info("Choose a result to see its learning curves.")
        return picked
    metrics = common.metric_names(*({m: 0} for m in frame["metric"].unique()))
    columns = st.columns(2)
    for n, metric in enumerate(metrics):
        with columns[n % 2]:
            st.altair_chart(curve_chart(frame, metric), width="stretch")
    st.caption("Solid: training; dashed: validation. One point per epoch.")
    return picked


def _matrix(results: list[ResultInfo], picked: list[ResultInfo]) -> None:
    st.subheader("Confusion matrix")
    with_matrix = [r for r in results if r.confusion_matrix]
    if not with_matrix:
        st.info(
            "No result has a confusion matrix: classifiers get one when deployed with "
            "'Confusion matrix' on."
        )
        return
    preferred = [r for r in picked if r.confusion_matrix]
    if preferred and st.session_state.get("charts_matrix") not in {r.id for r in with_matrix}:
        st.session_state["charts_matrix"] = preferred[-1].id
    left, right = st.columns([3, 1], vertical_alignment="bottom")
    with left:
        r = common.pick_newest("Result", with_matrix, "charts_matrix", common.tested_label)
    normalize = right.toggle("Share of each true class", key="charts_normalize")
    if r is None:
        return
    st.altair_chart(
        confusion_chart(r.confusion_matrix, f"{result_label(r)}: test set", normalize=normalize),
        width="content",
    )
    total = sum(map(sum, r.confusion_matrix))
    hits = sum(row[i] for i, row in enumerate(r.confusion_matrix) if i < len(row))
    st.caption(f"{hits} of {total} test samples on the diagonal (rows: true class).")


def render() -> None:
    common.header("Charts", "Learning curves and confusion matrices of the trained models.")
    common.take_prefill("charts")
    results = [r for r in common.client().list_results() if r.history or r.confusion_matrix]
    if not results:
        st.info("No result has a learning curve yet: train a configuration first.")
        return
    st.button("Refresh", key="charts_refresh")
    picked = _curves(results)
    _matrix(results, picked)


render()
