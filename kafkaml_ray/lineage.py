"""Lineage: where a result came from, and what came of it.

A result's record (``results.lineage``, a `lineage_record.Lineage`) is written when its run
starts, from the rows it trains with, and kept as it was when those rows change later
(`record`): the datasource (its Kafka ranges, format, counts), the split, the model code
version, the parameters, the deployment or the Tune search. When the weights are saved,
their sha256 and the library versions of the training process are added (`saved`).
`tree` reads a result back with what it links to: datasource, deployment or search,
published versions of an online run, the inferences that served it and its
reproductions. `tree_text` draws it for the command line and `tree_dot` for the panel
(Graphviz), from the same tree.

>>> params_for({"pytorch": {"train": {"epochs": 5}}}, "pytorch", 32)
{'batch_size': 32, 'epochs': 5}
"""

from __future__ import annotations

import hashlib
import platform
import textwrap
from collections.abc import Mapping
from datetime import UTC, datetime
from importlib import metadata
from typing import Any

from kafkaml_ray import frameworks
from kafkaml_ray.lineage_record import (
    CodeRef,
    ControlRef,
    DatasourceRef,
    DeploymentRef,
    Lineage,
    SearchRef,
    SplitRef,
    WeightsRef,
)
from kafkaml_ray.redaction import public_url
from kafkaml_ray.store import (
    Datasource,
    Inference,
    InferenceStatus,
    MLModel,
    ModelVersion,
    ResultVersion,
    TrainingDeployment,
    TrainingResult,
    TuneRun,
)

__all__ = ["record", "saved", "tree", "tree_text", "tree_dot", "params_for"]


def params_for(kwargs: dict[str, Any], framework: str, batch_size: int) -> dict[str, Any]:
    """A deployment's training parameters for one framework, with its batch size."""
    return {"batch_size": batch_size, **kwargs.get(framework, {}).get("train", {})}


def _datasource(ds: Datasource) -> DatasourceRef:
    return DatasourceRef(
        id=ds.id,
        topic=ds.topic,
        format=ds.input_format,
        config=dict(ds.input_config or {}),
        messages=ds.total_msg,
        malformed=ds.malformed_count,
        validation_rate=ds.validation_rate,
        test_rate=ds.test_rate,
        incremental=ds.message.get("incremental") is True,
        description=ds.description,
        control=ControlRef(
            topic=ds.source_topic,
            partition=ds.source_partition,
            offset=ds.source_offset,
            timestamp_ms=ds.source_timestamp,
        ),
    )


def record(
    ds: Datasource,
    *,
    model: MLModel,
    version: ModelVersion | None,
    params: dict[str, Any],
    on_malformed: str,
    shuffle_seed: int | None = None,
    deployment: TrainingDeployment | None = None,
    tune: TuneRun | None = None,
    reproduction_of: int | None = None,
) -> Lineage:
    """The lineage of a result of ``model`` (its code ``version``) as its run starts on
    ``ds`` with ``params`` (training arguments and batch size, or a trial's
    hyper-parameters), split with ``shuffle_seed`` and reading malformed messages as
    ``on_malformed`` says. It holds the code itself, so it stays true if the model goes."""
    v, fw, dep = version, model.framework, deployment
    return Lineage(
        recorded_at=datetime.now(UTC).isoformat(timespec="seconds"),
        datasource=_datasource(ds),
        split=SplitRef(shuffle_seed=shuffle_seed, on_malformed=on_malformed),
        code=CodeRef(
            model_id=model.id,
            model=model.name,
            version=v.number if v else None,
            sha256=v.sha256 if v else None,
            imports=(v or model).imports,
            code=(v or model).code,
        ),
        framework=fw,
        params=dict(params),
        val_params=dict(dep.kwargs.get(fw, {}).get("val", {})) if dep else {},
        deployment=(
            DeploymentRef(
                id=dep.id,
                configuration=dep.configuration.name,
                gpu_fraction=dep.gpu_fraction,
                confusion_matrix=dep.confusion_matrix,
                online=dep.online,
            )
            if dep
            else None
        ),
        tune=(
            SearchRef(id=tune.id, metric=tune.metric, mode=tune.mode, space=tune.space)
            if tune
            else None
        ),
        reproduction_of=reproduction_of,
    )


def saved(lineage: Lineage, uri: str, weights: bytes, framework: str) -> Lineage:
    """``lineage`` completed when the weights are saved: their sha256 and the versions of
    the libraries in the process that trained them."""
    libraries = {"python": platform.python_version()}
    for name in ["kafkaml-ray", "ray", "numpy", *frameworks.get(framework).libraries]:
        try:
            libraries[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    weights_ref = WeightsRef(
        uri=public_url(uri), sha256=hashlib.sha256(weights).hexdigest(), bytes=len(weights)
    )
    return lineage.model_copy(update={"weights": weights_ref, "libraries": libraries})


# -- reading it back ------------------------------------------------------------------------
def _when(t: datetime | None) -> str | None:
    return t.replace(tzinfo=UTC).isoformat(timespec="seconds") if t else None


def tree(s: Any, r: TrainingResult) -> dict[str, Any]:
    """Result ``r`` with everything it links to, as plain data (`schemas.LineageInfo`):
    datasource → deployment or search → result → versions → inferences. A result stored
    before lineage was recorded is traced through its deployment or search."""
    from sqlalchemy import select

    lin = Lineage.of(r.lineage)
    tune = s.get(TuneRun, r.tune_id) if r.tune_id else None
    dep = r.deployment
    ds_id = (
        lin.datasource.id
        if lin
        else (tune.datasource_id if tune else dep.datasource_id if dep else None)
    )
    ds = s.get(Datasource, ds_id) if ds_id else None
    versions = s.scalars(
        select(ResultVersion).where(ResultVersion.result_id == r.id).order_by(ResultVersion.id)
    ).all()
    inferences = s.scalars(
        select(Inference).where(Inference.result_id == r.id).order_by(Inference.id)
    ).all()
    reproductions = s.scalars(
        select(TrainingResult.id).where(TrainingResult.reproduction_of == r.id)
    ).all()
    v = r.model_version
    return {
        "datasource": (
            {**_datasource(ds).model_dump(), "status": ds.status.value}
            if ds
            else lin.datasource.model_dump()  # (the record outlives a deleted datasource)
            if lin
            else None
        ),
        "deployment": (
            {"id": dep.id, "configuration": dep.configuration.name, "status": _dep_status(dep)}
            if dep
            else None
        ),
        "tune": (
            {"id": tune.id, "metric": tune.metric, "mode": tune.mode, "status": tune.status}
            if tune
            else None
        ),
        "result": {
            "id": r.id,
            "model": r.model.name,
            "framework": r.model.framework,
            "status": r.status.value,
            "code_version": v.number if v else None,
            "code_sha256": v.sha256 if v else None,
            "params": (lin.params if lin else None) or dict(r.hyperparameters or {}),
            "test_metrics": dict(r.test_metrics or {}),
            "weights_sha256": lin.weights.sha256 if lin and lin.weights else None,
            "best": r.best,
            "tags": list(r.tags or []),
        },
        "versions": [
            {
                "version": x.version,
                "window": x.window,
                "offsets": x.offsets,
                "metrics": x.metrics,
                "at": _when(x.created_at),
            }
            for x in versions
        ],
        "inferences": [
            {
                "id": i.id,
                "status": i.status.value,
                "input_topic": i.input_topic,
                "output_topic": i.output_topic,
                "replicas": i.replicas,
                "version": "follows" if i.follow else i.version,
                "from": _when(i.created_at),
                "to": (
                    _when(i.updated_at)
                    if i.status in (InferenceStatus.STOPPED, InferenceStatus.FAILED)
                    else None
                ),
            }
            for i in inferences
        ],
        "reproduction_of": r.reproduction_of,
        "reproductions": list(reproductions),
    }


def _dep_status(dep: TrainingDeployment) -> str:
    statuses = {x.status.value for x in dep.results}
    return next(iter(statuses)) if len(statuses) == 1 else "mixed"


def _metrics(m: dict[str, Any]) -> str:
    return ", ".join(f"{k} {v:.4g}" if isinstance(v, float) else f"{k} {v}" for k, v in m.items())


def _params(p: dict[str, Any]) -> str:
    return ", ".join(f"{k}={v}" for k, v in p.items())


def _lines(t: dict[str, Any]) -> list[tuple[int, str, str]]:
    """The tree as (depth, node id, text): the one layout both drawings follow."""
    out: list[tuple[int, str, str]] = []
    ds, r, depth = t.get("datasource"), t["result"], 0
    if ds:
        text = (
            f"datasource {ds['id']}: {ds['topic']} ({ds['format']}, {ds['messages']} messages, "
            f"{ds.get('malformed', 0)} malformed; validation {ds['validation_rate']:g}, "
            f"test {ds['test_rate']:g})" + (f" [{ds['status']}]" if ds.get("status") else "")
        )
        out.append((0, f"datasource-{ds['id']}", text))
        depth = 1
    if x := t.get("tune"):
        text = f"tune search {x['id']}: {x['mode']} {x['metric']} [{x['status']}]"
        out.append((depth, f"tune-{x['id']}", text))
        depth += 1
    elif x := t.get("deployment"):
        text = f"deployment {x['id']}: configuration {x['configuration']!r} [{x['status']}]"
        out.append((depth, f"deployment-{x['id']}", text))
        depth += 1
    code = f"code version {r['code_version']}" if r["code_version"] else "code unversioned"
    sha = f" (sha256 {r['code_sha256'][:12]})" if r["code_sha256"] else ""
    best = " best" if r["best"] else ""
    me = f"result-{r['id']}"
    out.append(
        (depth, me, f"result {r['id']}: {r['model']} ({r['framework']}), {code}{sha} "
         f"[{r['status']}]{best}")
    )  # fmt: skip
    inner = depth + 1
    if r["params"]:
        out.append((inner, f"{me}-params", "params: " + _params(r["params"])))
    if r["test_metrics"]:
        out.append((inner, f"{me}-test", "test: " + _metrics(r["test_metrics"])))
    if r["weights_sha256"]:
        out.append((inner, f"{me}-weights", f"weights sha256 {r['weights_sha256'][:12]}"))
    if first := t.get("reproduction_of"):
        out.append((inner, f"result-{first}", f"reproduces result {first}"))
    for i in t.get("reproductions", []):
        out.append((inner, f"result-{i}", f"reproduced by result {i}"))
    for v in t.get("versions", []):
        text = f"version {v['version']} (after window {v['window']}, {v['at']}): "
        out.append((inner, f"version-{r['id']}-{v['version']}", text + _metrics(v["metrics"])))
    for i in t.get("inferences", []):
        served = {"follows": "newest version", None: "its weights"}.get(
            i["version"], f"version {i['version']}"
        )
        text = (
            f"inference {i['id']}: {i['input_topic']} → {i['output_topic']}, {i['replicas']} "
            f"replica(s), {served}, {i['from']} to {i['to'] or 'now'} [{i['status']}]"
        )
        out.append((inner, f"inference-{i['id']}", text))
    return out


def tree_text(t: dict[str, Any]) -> str:
    """The lineage tree as indented text.

    >>> print(tree_text({"result": {"id": 1, "model": "m", "framework": "pytorch",
    ...     "status": "finished", "code_version": 2, "code_sha256": "ab" * 32, "params": {},
    ...     "test_metrics": {}, "weights_sha256": None, "best": False}}))
    result 1: m (pytorch), code version 2 (sha256 abababababab) [finished]
    """
    lines = _lines(t)
    return "\n".join("    " * depth + ("└─ " if depth else "") + text for depth, _, text in lines)


def tree_dot(t: dict[str, Any], links: Mapping[str, str] | None = None) -> str:
    """The lineage tree in Graphviz's DOT language, left to right. ``links`` maps a kind of
    node (datasource, deployment, tune, result, inference) to a URL template with ``{id}``,
    e.g. ``{"result": "results?result={id}"}``: those nodes link there."""
    nodes, edges, parents = [], [], {}
    for depth, node, text in _lines(t):
        kind, _, rest = node.partition("-")
        url = ""
        if links and kind in links and rest.isdigit():
            url = f', URL="{links[kind].format(id=rest)}", target="_top"'
        shape = {"datasource": "cylinder", "result": "box3d", "inference": "cds"}.get(kind, "box")
        if not rest.isdigit():  # a detail of its parent (params, metrics, weights, version)
            shape = "note"
        lines = textwrap.wrap(text, 48, break_on_hyphens=False)
        label = "\\n".join(x.replace("\\", "\\\\").replace('"', '\\"') for x in lines)
        nodes.append(f'  "{node}" [label="{label}", shape={shape}{url}];')
        parents[depth] = node
        if depth:
            edges.append(f'  "{parents[depth - 1]}" -> "{node}";')
    body = "\n".join(dict.fromkeys(nodes + edges))
    return (
        f"digraph lineage {{\n  rankdir=LR;\n  node [fontname=Helvetica, fontsize=10];\n{body}\n}}"
    )
