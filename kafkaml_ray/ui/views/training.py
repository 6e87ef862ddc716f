"""Training: deploy a configuration (one run per model, waiting for its data stream) and
follow the deployments, their results and their progress."""

from __future__ import annotations

from collections import Counter
from typing import Any

import streamlit as st

from kafkaml_ray.schemas import ConfigurationInfo, DeploymentInfo, ResultInfo
from kafkaml_ray.train.kwargs import TRAIN_ARGS, VAL_ARGS
from kafkaml_ray.ui import common

TRAIN_HELP = "name=value, ... Accepted: " + ", ".join(
    f"{k} ({why})" for k, (_, _, why) in TRAIN_ARGS.items()
)
VAL_HELP = "name=value, ... Accepted: " + ", ".join(
    f"{k} ({why})" for k, (_, _, why) in VAL_ARGS.items()
)


def _deploy(configs: list[ConfigurationInfo]) -> None:
    st.subheader("Deploy a configuration")
    if not configs:
        st.info("Create a configuration on the Configurations page first.")
        return
    with st.form("deploy_training"):
        config = common.pick(
            "Configuration",
            configs,
            "train_config",
            lambda c: f"{c.id} · {c.name} ({', '.join(c.model_names)})",
        )
        left, middle, right = st.columns(3)
        batch_size = left.number_input("Batch size", 1, 1_000_000, 32, key="train_batch")
        gpu = middle.number_input(
            "GPU per model",
            0.0,
            8.0,
            0.0,
            step=0.05,
            key="train_gpu",
            help="A fraction of a GPU (e.g. 0.25: four models share one GPU); 0 trains on CPUs.",
        )
        right.write("")
        matrix = right.checkbox("Confusion matrix (classifiers)", True, key="train_matrix")
        names = common.FRAMEWORK_NAMES
        st.markdown("**Training arguments**")
        kwargs = {
            fw: col.text_input(label, "epochs=5", key=f"train_kwargs_{fw}", help=TRAIN_HELP)
            for col, (fw, label) in zip(st.columns(len(names)), names.items(), strict=True)
        }
        st.markdown("**Validation arguments**")
        val_kwargs = {
            fw: col.text_input(
                label, "", key=f"train_val_{fw}", help=VAL_HELP, placeholder="batch_size=256"
            )
            for col, (fw, label) in zip(st.columns(len(names)), names.items(), strict=True)
        }
        with st.expander("More"):
            seed = st.text_input(
                "Shuffle seed",
                key="train_seed",
                help="Shuffle before splitting train/validation/test with this seed; empty: "
                "keep the stream's order (the newest messages are the test set).",
            )
            on_malformed = common.choice(
                "Malformed messages",
                {"fail": "fail the run", "skip": "skip and count them"},
                "train_malformed",
            )
            submit = st.checkbox(
                "Start it now as a Ray job (it waits for its data stream)",
                key="train_submit",
                help="Otherwise the control listener starts the run when the data is announced.",
            )
        with st.expander("Online training"):
            online = _online_options()
        deploy = st.form_submit_button("Deploy", type="primary")
    if not deploy or config is None:
        return
    seed = seed.strip()
    if seed and not seed.isdigit():
        st.error(f"The shuffle seed must be a whole number >= 0, not {seed!r}.")
        return
    if submit and not common.need("ray", "submit a Ray job"):
        return
    common.act(
        "Submitting the Ray job..." if submit else "Deploying...",
        common.client().deploy_training,
        config.id,
        batch_size=int(batch_size),
        kwargs=kwargs,
        val_kwargs=val_kwargs,
        gpu_fraction=float(gpu),
        confusion_matrix=matrix,
        shuffle_seed=int(seed) if seed else None,
        on_malformed=on_malformed,
        submit=submit,
        online=online,
        then=lambda dep: (
            f"Deployed {config.name!r} as deployment {dep.id}: {len(dep.results)} model(s) "
            f"wait for a control message with deployment_id {dep.id}."
        ),
        reset=lambda dep: {"train_deployment": dep.id},
    )


def _online_options() -> dict[str, Any] | None:
    """The online options (`OnlineOptions`) when 'Online' is on; an online stream trains
    online with the defaults anyway."""
    on = st.checkbox(
        "Online: train window after window on an endless stream, publishing versions",
        key="train_online",
        help='For a stream announced with "incremental": true (an online sink\'s, or '
        "Kafka-ML's OnlineRawSink); the training arguments' epochs are per window.",
    )
    left, middle, right = st.columns(3)
    options = {
        "window_messages": left.number_input("Window: messages", 1, 10**7, 1024, key="on_n"),
        "window_seconds": middle.number_input("...or seconds", 0.1, 3600.0, 10.0, key="on_s"),
        "stream_timeout_s": right.number_input(
            "End after no data for (s; -1 never)", -1.0, 10.0**6, 60.0, key="on_timeout"
        ),
        "monitoring_metric": left.text_input("Monitored metric", "loss", key="on_metric"),
        "change": middle.selectbox("Better when it goes", ["down", "up"], key="on_change"),
        "improvement": right.number_input(
            "Smallest gain that publishes", 0.0, 10.0**6, 0.05, key="on_gain"
        ),
    }
    return options if on else None


def _state(dep: DeploymentInfo) -> str:
    """``"1 finished, 1 training"``."""
    counts = Counter(r.status for r in dep.results)
    return ", ".join(f"{n} {status}" for status, n in counts.most_common())


def _table(deps: list[DeploymentInfo]) -> None:
    st.subheader("Deployments")
    common.table(
        [
            {
                "deployment": d.id,
                "configuration": d.configuration_name,
                "models": ", ".join(r.model_name for r in d.results),
                "state": _state(d),
                "batch size": d.batch_size,
                "training arguments": "; ".join(
                    f"{fw}: {_args(a.get('train'))}"
                    for fw, a in d.kwargs.items()
                    if fw in {r.framework for r in d.results}
                ),
                "GPU per model": d.gpu_fraction,
                "datasource": d.datasource_id,
                "Ray job": d.job_id or "",
                "created": common.when(d.created_at),
            }
            for d in reversed(deps)
        ],
        "No deployments yet: deploy a configuration above.",
    )


def _args(values: dict | None) -> str:
    return ", ".join(f"{k}={v!r}" for k, v in (values or {}).items()) or "-"


def _progress(r: ResultInfo) -> None:
    p = r.progress or {}
    if r.status == "training":
        epoch, epochs = p.get("epoch"), p.get("epochs")
        if epoch and epochs:
            batch, batches = p.get("batch"), p.get("batches")
            text = f"{r.model_name}: epoch {epoch} of {epochs}"
            if batch and batches:
                text += f", batch {batch} of {batches}"
            if p.get("metrics"):
                text += f" · {common.metrics_text(p['metrics'])}"
            done = (epoch - 1 + (batch / batches if batch and batches else 1)) / epochs
            st.progress(min(max(done, 0.0), 1.0), text=text)
        else:
            st.progress(0.0, text=f"{r.model_name}: {p.get('phase', 'starting')}")
        if p.get("waiting"):
            st.info(f"{r.model_name}: {p['waiting']}", icon=":material/hourglass_top:")
    elif r.status == "failed":
        st.error(f"{r.model_name}: {r.error}", icon=":material/error:")
    elif r.status == "stopped":
        st.warning(f"{r.model_name}: {r.error or 'stopped'}")


def _label(d: DeploymentInfo) -> str:
    return f"{d.id} · {d.configuration_name} ({_state(d)})"


def _detail(deps: list[DeploymentInfo]) -> None:
    dep = common.pick_newest("Deployment", deps, "train_deployment", _label)
    if dep is None:
        return
    if common.waiting_for_data(dep):
        st.info(
            f"Waiting for data: send a control message with deployment_id {dep.id} to "
            f"{common.settings().control_topic!r} (e.g. with a kafkaml_ray.ingest sink), or "
            "re-send a stored stream on the Datasources page."
        )
    st.dataframe(
        [
            {
                "result": r.id,
                "model": r.model_name,
                "framework": common.FRAMEWORK_NAMES.get(r.framework, r.framework),
                "status": r.status,
                "epoch": _epoch(r),
                "training": common.metrics_text(r.train_metrics),
                "validation": common.metrics_text(r.val_metrics),
                "test": common.metrics_text(r.test_metrics),
                "training time": common.seconds(r.training_time_s),
                "last change": common.when(r.updated_at),
            }
            for r in dep.results
        ],
        hide_index=True,
    )
    for r in dep.results:
        _progress(r)
    if not dep.done and st.button("Stop this deployment", key="train_stop"):
        common.stop_training(dep.id)


def _epoch(r: ResultInfo) -> str:
    """The epoch it is at (training) or the epochs it trained."""
    p = r.progress or {}
    epoch = p.get("epoch") if r.status == "training" else len(r.history)
    if not epoch:
        return ""
    return f"{epoch} of {p['epochs']}" if p.get("epochs") else str(epoch)


def render() -> None:
    common.header(
        "Training",
        "Deploy a configuration: one Ray Train run per model, started by its data stream.",
    )
    _deploy(common.client().list_configurations())
    left, right = st.columns([1, 5], vertical_alignment="center")
    left.button("Refresh", key="train_refresh")
    follow = right.toggle("Follow progress (every 2 s)", key="train_follow")
    _deployments(follow)


def _deployments(follow: bool) -> None:
    """The deployments and the chosen one's results; re-read every 2 s when followed."""

    @st.fragment(run_every=2 if follow else None)
    def deployments() -> None:
        deps = common.client().list_deployments()
        _table(deps)
        if deps:
            _detail(deps)

    deployments()


render()
