"""Inference: serve a trained result on Kafka topics (Ray Serve), follow the inferences
(status, replicas, lag, throughput, errors), stop, restart or delete them, and watch their
latest predictions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pandas as pd
import streamlit as st

from kafkaml_ray import KafkaMLError
from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.schemas import InferenceInfo, ResultInfo
from kafkaml_ray.ui import common
from kafkaml_ray.ui.charts import class_chart, classify

FORMATS = ["RAW", "AVRO", "JSON"]


# -- deploy --------------------------------------------------------------------------------
def _source_of(r: ResultInfo) -> tuple[str, dict[str, Any]]:
    """The input format and config of the stream the result was trained on (labels left
    out): what its inference reads by default."""
    client = common.client()
    try:
        ds_id = client.get_deployment(r.deployment_id).datasource_id if r.deployment_id else None
        if ds_id is None and r.tune_id is not None:  # a trial of a search
            ds_id = client.get_tune(r.tune_id).datasource_id
        if ds_id is None:
            return "RAW", {}
        ds = client.get_datasource(ds_id, check=False)
    except KafkaMLError:
        return "RAW", {}
    config = {k: v for k, v in ds.input_config.items() if not k.startswith("label_")}
    return ds.input_format, config


def _prefill(result_id: int | None = None) -> None:
    """Fill the form from a result: topics named after it, its stream's format and config."""
    result_id = result_id if result_id is not None else st.session_state.get("infer_result")
    if result_id is None:
        return
    try:
        r = common.client().get_result(result_id)
    except KafkaMLError:
        return
    fmt, config = _source_of(r)
    st.session_state.update(
        infer_input=f"inference-{r.id}-in",
        infer_output=f"inference-{r.id}-out",
        infer_format=fmt if fmt in FORMATS else "RAW",
        infer_config=json.dumps(config, indent=2),
    )


def _deploy(results: list[ResultInfo]) -> None:
    st.subheader("Deploy a result for inference")
    online = {r.id for r in common.client().list_online_results()}
    # Finished results, and online ones that published a version (while they train too).
    ready = [r for r in results if r.weights_uri and (r.status == "finished" or r.id in online)]
    if not ready:
        st.info("No finished result yet: train a configuration first.")
        return
    ids = [r.id for r in reversed(ready)]
    if st.session_state.get("infer_result") not in ids:
        st.session_state["infer_result"] = ids[0]
    if "infer_config" not in st.session_state:
        _prefill()
    r = common.pick_newest("Result", ready, "infer_result", common.tested_label, on_change=_prefill)
    left, right = st.columns(2)
    input_topic = left.text_input("Input topic", key="infer_input")
    output_topic = right.text_input(
        "Output topic", key="infer_output", help="Bad inputs go to <output topic>.dlq."
    )
    left, right = st.columns([1, 3])
    fmt = left.selectbox("Input format", FORMATS, key="infer_format")
    config_text = right.text_area(
        "Input config (JSON)",
        key="infer_config",
        height=120,
        help="Pre-filled from the stream the result was trained on, without its labels.",
    )
    scaling = common.choice(
        "Replicas",
        {"fixed": "a fixed number", "auto": "autoscale on consumer lag"},
        "infer_scaling",
    )
    cols = st.columns(4)
    if scaling == "fixed":
        replicas = cols[0].number_input("Replicas", 1, 256, 1, key="infer_replicas")
        low = high = None
    else:
        replicas = 1
        low = cols[0].number_input("Min replicas", 1, 256, 1, key="infer_min")
        high = cols[1].number_input("Max replicas", 1, 256, 4, key="infer_max")
    gpu = cols[2].number_input("GPU per replica", 0.0, 8.0, 0.0, step=0.05, key="infer_gpu")
    batch = cols[3].number_input("Batch size", 1, 100_000, 512, key="infer_batch")
    follow = (
        r is not None
        and r.id in online
        and st.toggle(
            "Follow new versions",
            key="infer_follow",
            help="An online result: swap to each newly published version, in place. Off: its "
            "newest version now, pinned.",
        )
    )
    exactly_once = st.toggle(
        "Exactly once",
        key="infer_exactly_once",
        help="Outputs, dead letters and input offsets commit in one Kafka transaction: a "
        "read_committed reader sees each input's prediction once, also after a replica or "
        "the broker fails. Off: at least once.",
    )
    if not st.button("Deploy", type="primary", key="infer_deploy", icon=":material/rocket_launch:"):
        return
    config = common.json_field(config_text or "{}", "input config", _an_object)
    problem = _check(input_topic, output_topic, low, high) if config is not None else ""
    if config is None or problem:
        if problem:
            st.error(problem, icon=":material/error:")
        return
    if not (
        common.need("kafka", "deploy the inference") and common.need("ray", "deploy the inference")
    ):
        return
    common.act(
        "Deploying on Ray Serve (creating topics, starting replicas)...",
        common.client().deploy_inference,
        r.id,
        input_topic.strip(),
        output_topic.strip(),
        input_format=fmt,
        input_config=config,
        replicas=int(replicas),
        min_replicas=None if low is None else int(low),
        max_replicas=None if high is None else int(high),
        gpu_fraction=float(gpu),
        batch_size=int(batch),
        follow=bool(follow),
        exactly_once=bool(exactly_once),
        then=lambda i: (
            f"Inference {i.id} of {i.model_name} runs: {i.input_topic} → {i.output_topic}."
        ),
        reset=lambda i: {"infer_manage": i.id},
    )


def _an_object(value: Any) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidInput("The input config must be a JSON object ({...}).")
    return value


def _check(input_topic: str, output_topic: str, low: Any, high: Any) -> str:
    """What is wrong with the form ('' if nothing): caught here, before any back end."""
    if not input_topic.strip() or not output_topic.strip():
        return "Name both the input and the output topic."
    if input_topic.strip() == output_topic.strip():
        return "The input and output topics must differ."
    if low is not None and high is not None and low > high:
        return f"Min replicas ({low}) is more than max replicas ({high})."
    return ""


# -- list and manage -----------------------------------------------------------------------
def _replicas(i: InferenceInfo) -> str:
    planned = f"{i.min_replicas}-{i.max_replicas} (auto)" if i.max_replicas else str(i.replicas)
    return f"{i.live_replicas} live of {planned}"


def _label(i: InferenceInfo) -> str:
    return f"{i.id} · {i.model_name}: {i.input_topic} → {i.output_topic} ({i.status})"


def _table(infs: list[InferenceInfo]) -> None:
    st.dataframe(
        [
            {
                "inference": i.id,
                "result": f"{i.result_id} · {i.model_name}",
                "status": i.status,
                "replicas": _replicas(i),
                "topics": f"{i.input_topic} → {i.output_topic}",
                "format": i.input_format,
                "lag": i.lag,
                "msgs/s": i.msgs_per_s,
                "consumed": i.consumed,
                "predicted": i.predicted,
                "dead letters": i.dead_letters,
                "GPU": i.gpu_fraction,
                "batch": i.batch_size,
                "error": i.error or "",
            }
            for i in reversed(infs)
        ],
        hide_index=True,
        column_config={"msgs/s": st.column_config.NumberColumn(format="%.1f")},
    )


def _manage(inf: InferenceInfo) -> None:
    if inf.status == "failed":
        st.error(f"Failed: {inf.error}", icon=":material/error:")
    elif inf.status == "running":
        port = common.settings().serve_port
        st.caption(
            f'HTTP: `POST http://127.0.0.1:{port}{inf.route}` with `{{"data": [sample, ...]}}`'
        )
        if common.running("ray"):  # replicas Serve wants but Ray cannot place, and why
            ok, live = common.call("ask Ray Serve", common.client().get_inference, inf.id, True)
            if ok and live.waiting:
                st.warning(live.waiting, icon=":material/hourglass_top:")
    stop, restart, delete, _ = st.columns([1, 1, 1, 3])
    actions = {
        "stop": stop.button(
            "Stop", key="infer_stop", disabled=inf.status != "running", icon=":material/stop:"
        ),
        "restart": restart.button(
            "Restart" if inf.status == "running" else "Start",
            key="infer_restart",
            icon=":material/restart_alt:",
        ),
        "delete": delete.button("Delete", key="infer_delete", icon=":material/delete:"),
    }
    chosen = next((a for a, clicked in actions.items() if clicked), None)
    if chosen is None or not common.need("ray", f"{chosen} the inference"):
        return
    client = common.client()
    fn, what, message = {
        "stop": (client.stop_inference, "Stopping...", f"Stopped inference {inf.id}."),
        "restart": (
            client.restart_inference,
            "Starting on Ray Serve...",
            f"Inference {inf.id} runs again, from its committed offsets.",
        ),
        "delete": (client.delete_inference, "Deleting...", f"Deleted inference {inf.id}."),
    }[chosen]
    common.act(
        what, fn, inf.id, then=message, reset={"infer_manage": None} if chosen == "delete" else None
    )


# -- live predictions ----------------------------------------------------------------------
def prediction_rows(predictions: list[Any]) -> list[dict[str, Any]]:
    """A table row per prediction (newest first): where it was, its key and what it says."""
    rows = []
    for p in reversed(predictions):
        row: dict[str, Any] = {
            "time (UTC)": datetime.fromtimestamp(p.timestamp_ms / 1000, UTC).strftime(
                "%H:%M:%S.%f"
            )[:-3],
            "partition": p.partition,
            "offset": p.offset,
            "key": p.key,
        }
        if p.error is not None:
            row["error"] = p.error
        else:
            row.update(classify(p.values))
        rows.append(row)
    return rows


def _live(inf: InferenceInfo) -> None:
    st.subheader("Latest predictions")
    left, middle, right = st.columns([1, 1, 2], vertical_alignment="bottom")
    n = left.number_input("How many", 1, 500, 20, key="tap_n")
    dead = middle.toggle("Dead letters", key="tap_dead", help=f"{inf.output_topic}.dlq")
    follow = right.toggle("Refresh every 2 s", key="tap_follow")

    @st.fragment(run_every=2 if follow else None)
    def view() -> None:
        st.button("Refresh", key="tap_refresh", icon=":material/refresh:")
        if not common.running("kafka"):
            st.warning("Kafka is not running: no predictions to read.")
            return
        topic = inf.output_topic + (".dlq" if dead else "")
        ok, found = common.call(
            f"Reading {topic}...", common.client().tap, inf.id, int(n), dead_letters=dead
        )
        if not ok:
            return
        if not found:
            st.info(f"No messages in {topic} yet.")
            return
        rows = prediction_rows(found)
        frame = pd.DataFrame(rows)
        st.caption(f"The latest {len(rows)} messages of {topic}, newest first.")
        config = {}
        if "confidence" in frame:
            config["confidence"] = st.column_config.ProgressColumn(
                "confidence", min_value=0.0, max_value=1.0, format="percent"
            )
        table, chart = st.columns([3, 2]) if "class" in frame else (st.container(), None)
        table.dataframe(frame, hide_index=True, column_config=config)
        if chart is not None:
            chart.altair_chart(class_chart(frame["class"].dropna().astype(int)))

    view()


def render() -> None:
    common.header("Inference", "Trained models served on Kafka topics by Ray Serve.")
    if common.take_prefill("inference").get("infer_result") is not None:
        _prefill()  # a result chosen on the Results page
    client = common.client()
    _deploy(client.list_results())
    st.subheader("Inferences")
    infs = client.list_inferences()
    if not infs:
        st.info("No inferences yet: deploy a finished result above.")
        return
    st.button("Refresh", key="infer_list_refresh")
    _table(infs)
    inf = common.pick_newest("Inference", infs, "infer_manage", _label)
    if inf is not None:
        _manage(inf)
        _live(inf)


render()
