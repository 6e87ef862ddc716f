"""Results: every trained model (as Kafka-ML lists them) with its metrics, training time and
status, filtered by what it came from and what it reached; compare several (the parameters
that differ marked); a result's lineage graph, tags and notes; reproduce, stop, delete,
download the weights, deploy for inference."""

from __future__ import annotations

from typing import Any

import pandas as pd
import streamlit as st

from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.lineage import tree_dot
from kafkaml_ray.results import compare, metric_filter, param_filter
from kafkaml_ray.schemas import ResultInfo
from kafkaml_ray.ui import common
from kafkaml_ray.ui.charts import phase_chart, phase_frame, result_label

SUBSETS = {"train": "training", "val": "validation", "test": "test"}
LOWER_IS_BETTER = ("loss", "error", "mse", "mae", "rmse")


def _metrics(r: ResultInfo) -> dict[str, dict[str, Any]]:
    return {"train": r.train_metrics, "val": r.val_metrics, "test": r.test_metrics}


def _columns(results: list[ResultInfo]) -> list[tuple[str, str]]:
    """(subset, metric) pairs that some result has, by subset then metric."""
    return [
        (subset, name)
        for subset in SUBSETS
        for name in common.metric_names(*(_metrics(r)[subset] for r in results))
    ]


def _table(results: list[ResultInfo]) -> None:
    columns = _columns(results)
    rows = []
    for r in reversed(results):
        row: dict[str, Any] = {"result": r.id, "model": r.model_name, "status": r.status}
        for subset, name in columns:
            row[f"{subset} {name}"] = _metrics(r)[subset].get(name)
        row.update(
            {
                "training time (s)": r.training_time_s,
                "last change": common.when(r.updated_at),
                "framework": common.FRAMEWORK_NAMES.get(r.framework, r.framework),
                "deployment": r.deployment_id if r.tune_id is None else f"tune {r.tune_id}",
                "error": r.error or "",
            }
        )
        rows.append(row)
    config = {
        f"{s} {n}": st.column_config.NumberColumn(f"{s} {n}", format="%.4f") for s, n in columns
    }
    config["training time (s)"] = st.column_config.NumberColumn(format="%.1f")
    st.dataframe(pd.DataFrame(rows), hide_index=True, column_config=config)


def _compare(results: list[ResultInfo]) -> None:
    st.subheader("Compare")
    by_id = {r.id: r for r in results}
    chosen = st.multiselect(
        "Results to compare",
        list(by_id),
        format_func=lambda i: f"{result_label(by_id[i])} ({by_id[i].status})",
        key="results_compare",
        placeholder="Choose two or more results",
    )
    if not chosen:
        return
    picked = [by_id[i] for i in chosen]
    rows = {
        f"{SUBSETS[subset]} {name}": {
            result_label(r): _metrics(r)[subset].get(name) for r in picked
        }
        for subset, name in _columns(picked)
    }
    rows["training time (s)"] = {result_label(r): r.training_time_s for r in picked}
    frame = pd.DataFrame.from_dict(rows, orient="index")
    frame.index.name = "metric"
    st.dataframe(_best(frame).format(precision=4, na_rep=""))
    st.caption("The best value of each row is marked; lower is better for losses and times.")
    sources = [row for row in compare(picked) if row["kind"] in ("source", "param")]
    came = pd.DataFrame(
        {
            result_label(r): [_shown(row["values"][i]) for row in sources]
            for i, r in enumerate(picked)
        },
        index=[row["name"] for row in sources],
    )
    came.index.name = "came from"
    differs = {row["name"] for row in sources if row["differs"]}
    st.dataframe(
        came.style.apply(
            lambda row: ["background-color: #fff3cd" if row.name in differs else ""] * len(row),
            axis=1,
        )
    )
    st.caption("What they came from: the rows that differ are highlighted.")
    phases = phase_frame(picked)
    if not phases.empty:
        st.altair_chart(phase_chart(phases), width="stretch")
        st.caption(
            "From the control message to the finished result: what is not 'epochs' is the "
            "start-up and the work after training."
        )
    if st.button("Learning curves of these", key="results_charts", icon=":material/show_chart:"):
        common.prefill("charts", charts_results=list(chosen))


def _shown(value: Any) -> str:
    return "" if value is None else str(value)


def _filters() -> dict[str, Any]:
    """The filters chosen above the table (`ResultFilter` fields)."""
    with st.expander(
        "Filter by what they came from and what they reached", icon=":material/filter_alt:"
    ):
        a, b, c, d = st.columns(4)
        found: dict[str, Any] = {
            "datasource_id": a.number_input(
                "Datasource", min_value=1, value=None, step=1, key="results_f_datasource"
            ),
            "topic": b.text_input("Topic", key="results_f_topic") or None,
            "model": c.text_input("Model", key="results_f_model") or None,
            "status": d.selectbox(
                "Status", ["waiting", "training", "finished", "failed", "stopped"],
                index=None, key="results_f_status",
            ),
        }  # fmt: skip
        e, f, g = st.columns(3)
        param = e.text_input("Parameter", key="results_f_param", placeholder="lr=0.01")
        metric = f.text_input(
            "Metric range", key="results_f_metric", placeholder="test_accuracy>=0.9"
        )
        found["text"] = g.text_input("Tag or notes", key="results_f_text") or None
        try:
            found["params"] = dict([param_filter(param)]) if param else {}
            found["metrics"] = dict([metric_filter(metric)]) if metric else {}
        except InvalidInput as err:
            st.error(str(err), icon=":material/error:")
            found["params"], found["metrics"] = {}, {}
    return {k: v for k, v in found.items() if v not in (None, {})}


def _lineage(r: ResultInfo) -> None:
    """The result's lineage graph (each node opens its page), its tags and notes."""
    links = {
        "result": "results?result={id}", "datasource": "datasources", "deployment": "training",
        "tune": "tuning", "inference": "inference",
    }  # fmt: skip
    with st.expander(
        "Lineage: where it came from, what came of it", icon=":material/account_tree:"
    ):
        st.graphviz_chart(tree_dot(common.client().lineage(r.id).model_dump(), links))
        if lin := r.lineage:
            st.caption(
                f"Code version {lin.code.version} (sha256 {str(lin.code.sha256)[:12]}); "
                + ", ".join(f"{k} {v}" for k, v in lin.libraries.items())
            )
        tags = st.text_input(
            "Tags (comma-separated)", ", ".join(r.tags), key=f"results_tags_{r.id}"
        )
        notes = st.text_area("Notes", r.notes, key=f"results_notes_{r.id}")
        if st.button("Save tags and notes", key="results_annotate", icon=":material/sell:"):
            wanted = [t.strip() for t in tags.split(",") if t.strip()]
            client = common.client()

            def annotate() -> None:
                client.tag_result(r.id, *[t for t in r.tags if t not in wanted], remove=True)
                if wanted:
                    client.tag_result(r.id, *wanted)
                client.set_result_notes(r.id, notes)

            common.act("Saving...", annotate, then=f"Saved the tags and notes of result {r.id}.")


def _best(frame: pd.DataFrame) -> Any:
    """The comparison with the best value of each row highlighted."""

    def mark(row: pd.Series) -> list[str]:
        values = pd.to_numeric(row, errors="coerce")
        if values.count() < 2:
            return [""] * len(row)
        lower = any(word in str(row.name) for word in (*LOWER_IS_BETTER, "time"))
        best = values.min() if lower else values.max()
        return ["font-weight: bold; background-color: #d4edda" if v == best else "" for v in values]

    return frame.style.apply(mark, axis=1)


def _act(results: list[ResultInfo]) -> None:
    st.subheader("Act on a result")
    r = common.pick_newest(
        "Result",
        results,
        "results_act",
        lambda r: f"{result_label(r)} ({r.status})",
    )
    if r is None:
        return
    if r.status == "failed":
        st.error(f"Failed: {r.error}", icon=":material/error:")
    elif r.error:
        st.warning(r.error)
    if r.hyperparameters:
        st.caption("Hyper-parameters: " + common.metrics_text(r.hyperparameters))
    _lineage(r)
    stop, delete, download, deploy, again = st.columns(5)
    can_stop = not r.done and r.deployment_id is not None
    if stop.button(
        "Stop",
        key="results_stop",
        disabled=not can_stop,
        help=f"Stops every model of deployment {r.deployment_id}.",
        icon=":material/stop_circle:",
    ):
        common.stop_training(r.deployment_id)
    if delete.button("Delete", key="results_delete", icon=":material/delete:"):
        common.act(
            "Deleting...",
            common.client().delete_result,
            r.id,
            then=f"Deleted result {r.id} ({r.model_name}).",
            reset={"results_act": None},
        )
    name = r.weights_uri.rsplit("/", 1)[-1] if r.weights_uri else "weights"
    download.download_button(
        "Download weights",
        data=lambda: common.client().download_weights(r.id)[1],
        file_name=f"result-{r.id}-{name}",
        mime="application/octet-stream",
        key="results_download",
        disabled=not r.weights_uri,
        on_click="ignore",
        icon=":material/download:",
    )
    if deploy.button(
        "Deploy for inference",
        key="results_deploy",
        disabled=r.status != "finished",
        type="primary",
        icon=":material/rocket_launch:",
    ):
        common.prefill("inference", infer_result=r.id)
    if again.button(
        "Reproduce",
        key="results_reproduce",
        disabled=not r.lineage or r.status == "training",
        help="Train the same code version with the same parameters on the same datasource.",
        icon=":material/replay:",
    ):
        common.act(
            "Re-sending the datasource...",
            common.client().reproduce,
            r.id,
            then=lambda dep: f"Deployment {dep.id} reproduces result {r.id}.",
        )


def render() -> None:
    common.header("Results", "Every trained model: metrics, training time and status.")
    if not common.client().list_results():
        st.info("No results yet: deploy a configuration on the Training page.")
        return
    if "result" in st.query_params:  # a link from a lineage graph
        picked = st.query_params.pop("result")
        st.session_state["results_act"] = int(picked) if picked.isdigit() else None
    st.button("Refresh", key="results_refresh")
    results = common.client().list_results(**_filters())
    if not results:
        st.info("No result matches these filters.")
        return
    _table(results)
    _compare(results)
    _act(results)


render()
