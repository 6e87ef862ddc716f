"""Cluster: the stack's parts, Ray's resources, Kafka topics and consumer-group lag."""

from __future__ import annotations

import streamlit as st

from kafkaml_ray import KafkaMLError, cluster
from kafkaml_ray.ui import common

GIB = 1024**3


def _stack() -> None:
    st.subheader("Stack")
    st.dataframe(
        [
            {
                "part": p.name,
                "state": "running" if p.running else "stopped",
                "address": p.address,
                "detail": p.detail,
            }
            for p in common.stack_parts()
        ],
        hide_index=True,
    )


def _ray() -> None:
    st.subheader("Ray resources")
    try:
        with st.spinner("Asking Ray..."):
            resources = {r.name: r for r in cluster.ray_resources(common.settings())}
    except KafkaMLError as e:
        st.warning(str(e))
        return
    columns = st.columns(3)
    for column, name in zip(columns, ("CPU", "GPU", "memory"), strict=True):
        r = resources.get(name)
        scale, unit = (GIB, " GiB") if name == "memory" else (1, "")
        value = f"{r.used / scale:g}{unit} of {r.total / scale:g}{unit}" if r else "none"
        column.metric(f"{name} in use", value)
    st.dataframe(
        [
            {"resource": r.name, "total": r.total, "in use": r.used, "available": r.available}
            for r in resources.values()
        ],
        hide_index=True,
    )


def _kafka() -> None:
    settings = common.settings()
    st.subheader("Kafka topics")
    internal = st.checkbox("Show Kafka's internal topics", key="cluster_internal")
    try:
        with st.spinner(f"Asking Kafka at {settings.bootstrap_servers}..."):
            topics = cluster.list_topics(settings, internal=internal)
            groups = cluster.consumer_groups(settings)
            lags = {g.group_id: cluster.consumer_lag(settings, g.group_id) for g in groups}
    except KafkaMLError as e:
        st.warning(str(e))
        return
    st.dataframe(
        [
            {
                "topic": t.name,
                "partitions": len(t.partitions),
                "messages": t.messages,
                "end offsets": ", ".join(f"{p}: {o}" for p, o in t.end_offsets.items()),
            }
            for t in topics
        ],
        hide_index=True,
    )
    st.subheader("Consumer groups")
    common.table(
        [
            {
                "group": g.group_id,
                "state": g.state,
                "members": g.members,
                "lag": sum(lags[g.group_id].values()),
                "lag by partition": ", ".join(
                    f"{t}[{p}]: {n}" for (t, p), n in lags[g.group_id].items()
                ),
            }
            for g in groups
        ],
        "No consumer groups.",
    )


def render() -> None:
    common.header("Cluster", "What runs, what Ray has, and what Kafka holds.")
    if st.button("Refresh", key="cluster_refresh"):
        st.cache_data.clear()
    _stack()
    _ray()
    _kafka()


render()
