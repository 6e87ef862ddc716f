"""Datasources: the data streams that control messages announced (their Kafka ranges and
counts, or why they were refused), and re-sending one to another deployment."""

from __future__ import annotations

import streamlit as st

from kafkaml_ray.schemas import DatasourceInfo, DeploymentInfo
from kafkaml_ray.ui import common


def _table(sources: list[DatasourceInfo]) -> None:
    st.dataframe(
        [
            {
                "datasource": d.id,
                "deployment": d.deployment_id,
                "status": "expired" if d.expired else d.status,
                "description": d.description,
                "format": d.input_format,
                "ranges": common.ranges_text(d.topic),
                "messages": d.total_msg,
                "validation": d.validation_rate,
                "test": d.test_rate,
                "skipped (malformed)": d.malformed_count,
                "error": d.error or "",
                "control message": f"{d.source_topic}[{d.source_partition}]@{d.source_offset}",
                "received": common.when(d.created_at),
            }
            for d in reversed(sources)
        ],
        hide_index=True,
        column_config={
            "validation": st.column_config.NumberColumn(format="percent"),
            "test": st.column_config.NumberColumn(format="percent"),
        },
    )


def _label(d: DatasourceInfo) -> str:
    return f"{d.id} · {d.description or common.ranges_text(d.topic) or 'no ranges'} ({d.status})"


def _detail(sources: list[DatasourceInfo]) -> None:
    d = common.pick_newest("Datasource", sources, "ds_detail", _label)
    if d is None:
        return
    if d.status in ("refused", "failed"):
        st.error(f"{d.status.capitalize()}: {common.plain(d.error or '')}", icon=":material/error:")
    elif d.expired:
        st.warning(
            f"Expired: {common.plain(d.expired)}. It cannot be trained on again.",
            icon=":material/history_toggle_off:",
        )
    elif d.status == "unknown_deployment":
        st.warning(f"No deployment {d.deployment_id} existed: re-send it to one below.")
    elif d.malformed_count:
        st.warning(common.plain(d.error or f"{d.malformed_count} malformed messages were skipped."))
    left, right = st.columns(2)
    with left:
        st.caption("Input config")
        st.json(d.input_config, expanded=True)
    with right:
        st.caption("Control message as received")
        st.json(d.message, expanded=False)


def _resend(sources: list[DatasourceInfo], deps: list[DeploymentInfo]) -> None:
    st.subheader("Re-send to another deployment")
    st.caption(
        "The stored control message goes to the chosen deployment: it trains on the same "
        "Kafka ranges, and the data is not sent again."
    )
    usable = common.stored_streams(sources)
    if not usable:
        st.info("No stored stream can be re-sent: each was refused, or its data expired.")
        return
    if not deps:
        st.info("Deploy a configuration on the Training page first.")
        return
    with st.form("resend"):
        d = common.pick_stream(usable, "ds_resend")
        dep = common.pick(
            "Deployment",
            sorted(deps, key=lambda x: (not common.waiting_for_data(x), -x.id)),
            "ds_deployment",
            lambda x: (
                f"{x.id} · {x.configuration_name}"
                + (
                    " (waiting for data)"
                    if common.waiting_for_data(x)
                    else " (not waiting: it will refuse it)"
                )
            ),
        )
        send = st.form_submit_button("Re-send", type="primary", icon=":material/send:")
    if not send or d is None or dep is None:
        return
    if not common.need("kafka", "send the control message"):
        return
    common.act(
        "Sending the control message to Kafka...",
        common.client().resend_datasource,
        d.id,
        dep.id,
        then=f"Re-sent datasource {d.id} to deployment {dep.id}: it trains when the control "
        "listener reads it.",
    )


def render() -> None:
    common.header("Datasources", "The data streams announced by control messages.")
    client = common.client()
    sources = client.list_datasources()
    if not sources:
        st.info(
            "No data streams yet: send training data with a kafkaml_ray.ingest sink (or any "
            f"Kafka-ML client), then its control message to {common.settings().control_topic!r}."
        )
        return
    st.button("Refresh", key="ds_refresh")
    _table(sources)
    _detail(sources)
    _resend(sources, client.list_deployments())


render()
