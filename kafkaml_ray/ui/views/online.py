"""Online: a result that trains online, window after window: its prequential learning curve
(each window scored before it was trained on), the versions it published (marked on the
chart), and the inferences that serve it (following its newest version, or pinned)."""

from __future__ import annotations

import streamlit as st

from kafkaml_ray.schemas import ResultInfo
from kafkaml_ray.ui import common
from kafkaml_ray.ui.charts import (
    result_label,
    version_chart,
    version_frame,
    window_chart,
    window_frame,
)


def _label(r: ResultInfo) -> str:
    return f"{result_label(r)} ({r.status})"


def _versions(result_id: int) -> None:
    st.subheader("Versions")
    versions = common.client().list_versions(result_id)
    frame = version_frame(versions)
    if not frame.empty:
        st.altair_chart(version_chart(frame), width="stretch")
        st.caption(
            "Each version's monitored metric beside the version it replaced, both scored on "
            "the window's held-out data when it was published."
        )
    common.table(
        [
            {
                "version": v.version,
                "after window": v.window,
                "published": common.when(v.created_at),
                "metrics": common.metrics_text(v.metrics),
                "trained through": ", ".join(f"{k} @ {n}" for k, n in v.offsets.items()),
            }
            for v in reversed(versions)
        ],
        "No version yet: the first window publishes version 1.",
    )


def _served_by(result_id: int) -> None:
    st.subheader("Served by")
    common.table(
        [
            {
                "inference": i.id,
                "status": i.status,
                "serves": "its newest version (follows)" if i.follow else f"version {i.version}",
                "input": i.input_topic,
                "output": i.output_topic,
            }
            for i in common.client().list_inferences()
            if i.result_id == result_id
        ],
        "No inference serves it: deploy one on the Inference page (with 'Follow new versions').",
    )


def render() -> None:
    common.header(
        "Online",
        "Models that keep learning from a stream: each window is scored before the model "
        "trains on it, and a better model is published as a new version.",
    )
    client = common.client()
    results = client.list_online_results()
    if not results:
        st.info(
            "No online run yet: deploy a configuration on the Training page, then send its "
            "data with an online sink (RawSink(..., online=True)) or Kafka-ML's OnlineRawSink."
        )
        return
    st.button("Refresh", key="online_refresh")
    r = common.pick_newest("Result", results, "online_result", _label)
    if r is None:
        return
    windows = client.list_windows(r.id)
    left, middle, right = st.columns(3)
    left.metric("Windows", len(windows))
    middle.metric("Messages trained", f"{sum(w.messages for w in windows):,}")
    right.metric("Status", r.status)
    running = r.status == "training" and r.deployment_id is not None
    if running and st.button("Stop", icon=":material/stop_circle:", key="online_stop"):
        common.stop_training(r.deployment_id)
    frame = window_frame(windows)
    if frame.empty:
        st.info("No window scored yet.")
    else:
        metrics = common.metric_names(*({m: 0} for m in frame["metric"].unique()))
        columns = st.columns(2)
        for n, metric in enumerate(metrics):
            with columns[n % 2]:
                st.altair_chart(window_chart(frame, metric), width="stretch")
        st.caption(
            "Solid: prequential (the window scored before training on it); dashed: its "
            "validation share after. Red rules: a version published after that window."
        )
    _versions(r.id)
    _served_by(r.id)


render()
