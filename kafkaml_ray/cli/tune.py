"""The ``tune`` commands: search a model's hyper-parameters with Ray Tune; export a search
to MLflow."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import click

from kafkaml_ray._private.text import (
    metrics_text,
    table,
)
from kafkaml_ray.cli.kit import (
    client_from_env,
    emit,
    json_option,
)

__all__ = ["tune"]


@click.group()
def tune() -> None:
    """Hyper-parameter search (Ray Tune) of a model on a stored data stream."""


def _space(text: str) -> dict[str, Any]:
    """The --space option: JSON text, or @FILE holding it."""
    if text.startswith("@"):
        try:
            text = Path(text[1:]).read_text()
        except OSError as e:
            raise click.BadParameter(
                f"cannot read {text[1:]}: {e.strerror}", param_hint="--space"
            ) from None
    try:
        return json.loads(text)
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--space") from None


def _tune_text(t) -> str:
    from kafkaml_ray.train.tune import metric_value

    head = (
        f"tune run {t.id}: model {t.model_name!r} on datasource {t.datasource_id}, {t.status}; "
        f"{t.mode} {t.metric} over {t.num_samples} samples of {json.dumps(t.space)}"
        + (f"\n  best: result {t.best_result_id}" if t.best_result_id else "")
        + (f"\n  error: {t.error}" if t.error else "")
    )
    rows = [
        (
            r.id,
            "*" if r.best else "",
            r.status,
            ", ".join(
                f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                for k, v in sorted(r.hyperparameters.items())
            ),
            "" if (v := metric_value(r, t.metric)) is None else f"{v:.4g}",
            metrics_text(r.val_metrics),
            f"{r.training_time_s:.1f}s" if r.training_time_s else "",
            (r.error or "")[:120],
        )
        for r in t.trials
    ]
    header = [
        "result",
        "best",
        "status",
        "hyper-parameters",
        t.metric,
        "validation",
        "time",
        "error",
    ]
    return head + "\n" + table(rows, header)


def _follow(client, tune_id: int, interval: float = 1.0):
    """Print each trial's progress (to stderr) until the search is done; return it."""
    seen: dict[int, str] = {}
    while True:
        t = client.get_tune(tune_id)
        for r in t.trials:
            p = r.progress or {}
            line = (
                f"trial result {r.id} [{r.status}] epoch {p.get('epoch') or 0}/"
                f"{p.get('epochs') or '?'} {metrics_text(p.get('metrics') or {})}"
            )
            if seen.get(r.id) != line:
                seen[r.id] = line
                click.echo(line, err=True)
        if t.done:
            return t
        time.sleep(interval)


@tune.command("start")
@click.argument("model")
@click.option("-d", "--datasource", "datasource_id", type=int, required=True, help="Datasource id.")
@click.option(
    "--space",
    required=True,
    help='Search space as JSON or @FILE, e.g. \'{"lr": {"loguniform": [1e-4, 1e-1]}, '
    '"batch_size": {"choice": [16, 32]}, "epochs": 2}\' (choice, grid, uniform, loguniform, '
    "randint, or a fixed value); a scikit-learn or XGBoost model's own parameters as "
    'model.<parameter>, e.g. \'{"model.alpha": {"loguniform": [1e-5, 1e-1]}}\'.',
)
@click.option("--metric", required=True, help="Metric to optimise, e.g. val_accuracy, val_loss.")
@click.option("--mode", type=click.Choice(["max", "min"]), default="max", show_default=True)
@click.option("-n", "--samples", default=4, show_default=True, help="Sampled configurations.")
@click.option("--concurrency", default=2, show_default=True, help="Trials at once (one CPU each).")
@click.option("--follow", is_flag=True, help="Show the trials' progress until the search ends.")
@json_option
def tune_start(model, datasource_id, space, metric, mode, samples, concurrency, follow, as_json):
    """Search MODEL's hyper-parameters on a stored datasource; every trial is stored as a
    training result, the best one marked."""
    client = client_from_env()
    t = client.tune(
        model,
        datasource_id,
        _space(space),
        metric,
        mode=mode,
        num_samples=samples,
        max_concurrent_trials=concurrency,
    )
    if follow:
        t = _follow(client, t.id)
    emit(t, as_json, _tune_text)


@tune.command("list")
@json_option
def tune_list(as_json: bool) -> None:
    """Hyper-parameter searches."""
    emit(
        client_from_env().list_tunes(),
        as_json,
        lambda ts: table(
            [
                (
                    t.id,
                    t.model_name,
                    t.datasource_id,
                    f"{t.mode} {t.metric}",
                    len(t.trials),
                    t.status,
                    t.best_result_id or "",
                )
                for t in ts
            ],
            ["id", "model", "datasource", "goal", "trials", "status", "best result"],
        ),
    )


@tune.command("show")
@click.argument("tune_id", type=int)
@click.option("--follow", is_flag=True, help="Show the trials' progress until the search ends.")
@json_option
def tune_show(tune_id: int, follow: bool, as_json: bool) -> None:
    """One search with its trials (hyper-parameters, metric, status)."""
    client = client_from_env()
    t = _follow(client, tune_id) if follow else client.get_tune(tune_id)
    emit(t, as_json, _tune_text)


@tune.command("stop")
@click.argument("tune_id", type=int)
@json_option
def tune_stop(tune_id: int, as_json: bool) -> None:
    """Stop a search: running trials are stopped and their Ray resources freed; the best
    finished trial is still marked."""
    emit(client_from_env().stop_tune(tune_id), as_json, _tune_text)


@tune.command("delete")
@click.argument("tune_id", type=int)
def tune_delete(tune_id: int) -> None:
    """Delete a search that has ended, with its trials' results and their artifacts."""
    client_from_env().delete_tune(tune_id)
    click.echo(f"deleted tune run {tune_id}")


@tune.command("export")
@click.argument("tune_id", type=int)
@click.option(
    "--mlflow", "tracking_uri", required=True, metavar="URI", help="An MLflow tracking URI."
)
@click.option("--experiment", default="kafkaml-ray", show_default=True)
def tune_export(tune_id: int, tracking_uri: str, experiment: str) -> None:
    """Log a finished search to MLflow: a parent run with one child run per trial (needs
    the mlflow extra)."""
    from kafkaml_ray.tracking import export_tune

    run_id = export_tune(client_from_env(), tune_id, tracking_uri, experiment)
    click.echo(f"tune run {tune_id} exported to {tracking_uri} as MLflow run {run_id}")
