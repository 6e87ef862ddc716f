"""The ``result`` commands: list and filter results, show, compare, trace their lineage,
reproduce, tag, export to MLflow, download, delete."""

from __future__ import annotations

import json
from pathlib import Path

import click

from kafkaml_ray import frameworks
from kafkaml_ray._private.text import (
    follow,
    metrics_text,
    results_table,
    table,
)
from kafkaml_ray.cli.kit import (
    client_from_env,
    emit,
    json_option,
)

__all__ = ["result"]


@click.group()
def result() -> None:
    """Training results: list and filter, compare, trace (lineage), reproduce, tag, download
    weights, delete."""


@result.command("list")
@click.option("-d", "--deployment", "deployment_id", type=int, help="Only this deployment's.")
@click.option("--datasource", "datasource_id", type=int, help="Trained on this datasource.")
@click.option("--topic", help="Trained on data from this topic.")
@click.option("--model", help="Of this model (name).")
@click.option("--code-version", type=int, help="With this version of its model's code.")
@click.option("--framework", type=click.Choice(frameworks.names()))
@click.option(
    "--status", type=click.Choice(["waiting", "training", "finished", "failed", "stopped"])
)
@click.option(
    "--param", "params", multiple=True, metavar="NAME=VALUE",
    help="A training argument or hyper-parameter value, e.g. lr=0.01 (repeatable).",
)  # fmt: skip
@click.option(
    "--metric", "metrics", multiple=True, metavar="RANGE",
    help="A final metric's range: test_accuracy>=0.9, val_loss<=0.3, test_mae=0..2 "
    "(test_, val_ or train_ metrics; repeatable).",
)  # fmt: skip
@click.option("--tag", help="Tagged so (result tag).")
@click.option("--text", help="Found in the notes or tags.")
@click.option("--tune", "tune_id", type=int, help="Trials of this Tune search.")
@json_option
def result_list(deployment_id, params, metrics, as_json, **filters) -> None:
    """Results side by side: model, metrics, training time, status; filtered by what they
    came from (datasource, topic, model, code version, parameters) and what they reached."""
    from kafkaml_ray.results import metric_filter, param_filter

    found = client_from_env().list_results(
        deployment_id,
        params=dict(param_filter(p) for p in params),
        metrics=dict(metric_filter(m) for m in metrics),
        **{k: v for k, v in filters.items() if v is not None},
    )
    emit(found, as_json, results_table)


@result.command("compare")
@click.argument("result_ids", type=int, nargs=-1, required=True)
@json_option
def result_compare(result_ids, as_json) -> None:
    """Results side by side: what they came from and what they reached; the rows that
    differ are marked with *."""
    from kafkaml_ray.results import compare

    client = client_from_env()
    rows = compare([client.get_result(i) for i in result_ids])
    if as_json:
        click.echo(json.dumps(rows, indent=2, default=str))
        return
    click.echo(
        table(
            [(("* " if row["differs"] else "  ") + row["name"], *row["values"]) for row in rows],
            ["", *(f"result {i}" for i in result_ids)],
        )
    )


@result.command("lineage")
@click.argument("result_id", type=int)
@click.option("--dot", is_flag=True, help="Print it as a Graphviz graph (dot -Tpng).")
@json_option
def result_lineage(result_id: int, dot: bool, as_json: bool) -> None:
    """Where a result came from and what came of it: datasource → deployment or search →
    result → published versions → the inferences that served it."""
    from kafkaml_ray.lineage import tree_dot, tree_text

    info = client_from_env().lineage(result_id)
    if dot:
        click.echo(tree_dot(info.model_dump()))
    else:
        emit(info, as_json, lambda t: tree_text(t.model_dump()))


@result.command("reproduce")
@click.argument("result_id", type=int)
@click.option("--wait/--no-wait", default=True, show_default=True, help="Follow the training.")
@json_option
def result_reproduce(result_id: int, wait: bool, as_json: bool) -> None:
    """Train a result again: the same model code version, parameters and datasource (its
    control message is re-sent); the new result is linked to it as a reproduction."""

    client = client_from_env()
    dep = client.reproduce(result_id)
    if wait and not as_json:
        click.echo(f"deployment {dep.id} reproduces result {result_id}")
        dep = follow(client, dep.id)
    emit(dep.results, as_json, results_table)


@result.command("export")
@click.argument("result_id", type=int)
@click.option(
    "--mlflow", "tracking_uri", required=True, metavar="URI",
    help="An MLflow tracking URI: sqlite:///mlflow.db, a directory, http://host:5000.",
)  # fmt: skip
@click.option("--experiment", default="kafkaml-ray", show_default=True)
def result_export(result_id: int, tracking_uri: str, experiment: str) -> None:
    """Log a result to MLflow: parameters, per-epoch metrics, test metrics, the datasource
    as a dataset input, the code, the weights, the confusion matrix and its lineage (needs
    the mlflow extra: pip install 'kafkaml-ray[mlflow]')."""
    from kafkaml_ray.tracking import export_result

    run_id = export_result(client_from_env(), result_id, tracking_uri, experiment)
    click.echo(f"result {result_id} exported to {tracking_uri} as MLflow run {run_id}")


@result.command("tag")
@click.argument("result_id", type=int)
@click.argument("tags", nargs=-1, required=True)
@click.option("--remove", is_flag=True, help="Remove these tags instead.")
@json_option
def result_tag(result_id: int, tags, remove: bool, as_json: bool) -> None:
    """Tag a result (result list --tag finds it)."""
    r = client_from_env().tag_result(result_id, *tags, remove=remove)
    emit(r, as_json, lambda r: f"result {r.id} tags: {', '.join(r.tags) or '(none)'}")


@result.command("note")
@click.argument("result_id", type=int)
@click.argument("notes")
@json_option
def result_note(result_id: int, notes: str, as_json: bool) -> None:
    """Set a result's notes (result list --text finds them)."""
    r = client_from_env().set_result_notes(result_id, notes)
    emit(r, as_json, lambda r: f"result {r.id} notes: {r.notes}")


@result.command("show")
@click.argument("result_id", type=int)
@json_option
def result_show(result_id: int, as_json: bool) -> None:
    """One result with its learning curve (an online result's: its windows and versions)."""
    client = client_from_env()

    def text(r) -> str:
        windows = client.list_windows(r.id)
        if windows:  # online: window after window, each scored before it was trained on
            curve = (
                _windows_text(windows)
                + "\n\nversions:\n"
                + _versions_text(client.list_versions(r.id))
            )
        else:
            curve = table(
                [(h["epoch"], metrics_text(h["train"]), metrics_text(h["val"])) for h in r.history],
                ["epoch", "train", "validation"],
            )
        extra = f"\nweights: {r.weights_uri}" if r.weights_uri else ""
        if r.model_version is not None:
            extra += (
                f"\ncode: {r.model_name} version {r.model_version} (sha256 {r.code_sha256[:12]}; "
                f"kafkaml-ray model versions {r.model_id})"
            )
        if r.lineage:
            params = ", ".join(f"{k}={v}" for k, v in r.params.items())
            extra += (
                f"\ndata: datasource {r.datasource_id} ({r.lineage.datasource.topic}); params: "
                f"{params or 'none'} (kafkaml-ray result lineage {r.id})"
            )
        if r.tags or r.notes:
            extra += f"\ntags: {', '.join(r.tags) or 'none'}; notes: {r.notes or 'none'}"
        if r.phases:
            total = sum(r.phases.values())
            spent = ", ".join(f"{phase} {s:.2f}" for phase, s in r.phases.items())
            extra += f"\ntime by phase (s, {total:.1f} in all): {spent}"
        return results_table([r]) + "\n\nlearning curve:\n" + curve + extra

    emit(client.get_result(result_id), as_json, text)


@result.command("windows")
@click.argument("result_id", type=int)
@json_option
def result_windows(result_id: int, as_json: bool) -> None:
    """An online result's windows: each scored before it was trained on (prequential), then
    its training and validation metrics, the offsets it covers and the version it published."""

    emit(client_from_env().list_windows(result_id), as_json, _windows_text)


def _windows_text(ws) -> str:
    rows = [
        (
            w.window,
            w.messages,
            w.malformed,
            metrics_text(w.prequential),
            metrics_text(w.train),
            metrics_text(w.val),
            " ".join(f"{k}[{a}:{b})" for k, (a, b) in w.offsets.items()),
            w.version or "",
        )
        for w in ws
    ]
    head = ["window", "messages", "malformed", "prequential", "train", "validation"]
    return table(rows, [*head, "offsets", "published"])


@result.command("versions")
@click.argument("result_id", type=int)
@json_option
def result_versions(result_id: int, as_json: bool) -> None:
    """An online result's published versions: when, after which window, with which metrics,
    trained through which offsets."""

    emit(client_from_env().list_versions(result_id), as_json, _versions_text)


def _versions_text(vs) -> str:
    rows = [
        (
            v.version,
            v.window,
            v.created_at.isoformat(" ", "seconds"),
            metrics_text(v.metrics),
            " ".join(f"{k}@{n}" for k, n in v.offsets.items()),
        )
        for v in vs
    ]
    return table(rows, ["version", "window", "published", "metrics", "trained through"])


@result.command("download")
@click.argument("result_id", type=int)
@click.option("-o", "--output", type=click.Path(dir_okay=False), help="File to write.")
@click.option("--version", type=int, help="An online result's published version (default: newest).")
def result_download(result_id: int, output: str | None, version: int | None) -> None:
    """Download trained weights (safetensors for PyTorch, .keras for Keras)."""
    name, blob = client_from_env().download_weights(result_id, version=version)
    path = Path(output or f"result-{result_id}-{name}")
    path.write_bytes(blob)
    click.echo(f"wrote {path} ({len(blob):,} bytes)")


@result.command("delete")
@click.argument("result_id", type=int)
def result_delete(result_id: int) -> None:
    """Delete a result and its artifacts."""
    client_from_env().delete_result(result_id)
    click.echo(f"deleted result {result_id}")
