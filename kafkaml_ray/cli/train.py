"""The ``train`` commands: deploy configurations for training, follow and stop them."""

from __future__ import annotations

from typing import Any

import click

from kafkaml_ray import frameworks
from kafkaml_ray._private.text import (
    deployment_text,
    follow,
    results_table,
    table,
)
from kafkaml_ray.cli.kit import (
    client_from_env,
    emit,
    json_option,
    model_options,
)
from kafkaml_ray.options import OnlineOptions, TrainingOptions

__all__ = ["train"]


def _kwargs_per_framework(command: Any) -> Any:
    """``--pytorch-kwargs``, ``--tensorflow-kwargs``, ... : one option per framework."""
    for fw in reversed(frameworks.names()):
        label = frameworks.get(fw).label
        command = click.option(
            f"--{fw}-kwargs", help=f"Training arguments for {label} models (overrides --kwargs)."
        )(command)
    return command


@click.group()
def train() -> None:
    """Deploy configurations for training, follow and stop them."""


@train.command("deploy")
@click.argument("configuration")
@click.option(
    "--kwargs",
    "both",
    default="epochs=5",
    show_default=True,
    help="Training arguments for every framework, e.g. 'epochs=5, lr=0.001'.",
)
@_kwargs_per_framework
@click.option("--val-kwargs", default="", help="Validation arguments, e.g. 'batch_size=256'.")
@model_options(TrainingOptions, batch_size="-b --batch-size", gpu_fraction="--gpu")
@click.option(
    "--online",
    is_flag=True,
    help="Train online with the options below (an online stream also does without them).",
)
@model_options(OnlineOptions)
@click.option("--submit", is_flag=True, help="Run it now as a Ray job that waits for its data.")
@json_option
def train_deploy(
    configuration,
    both,
    val_kwargs,
    online,
    submit,
    as_json,
    **options,
):
    """Deploy CONFIGURATION for training: its models wait for a data stream, announced by a
    control message naming this deployment's id. A control message with "incremental": true
    (an online sink's) trains them online: window after window, publishing versions; the
    kwargs' epochs are then per window."""
    online_options = {k: options.pop(k) for k in OnlineOptions.model_fields}
    kwargs = {fw: options.pop(f"{fw}_kwargs") or both for fw in frameworks.names()}
    dep = client_from_env().deploy_training(
        configuration,
        kwargs=kwargs,
        val_kwargs=val_kwargs,
        submit=submit,
        online=online_options if online else None,
        **options,
    )
    emit(dep, as_json, lambda d: deployment_text(d) + f"\nsend data with deployment_id={d.id}")


@train.command("list")
@json_option
def train_list(as_json: bool) -> None:
    """Training deployments and the state of their models."""
    emit(
        client_from_env().list_deployments(),
        as_json,
        lambda ds: table(
            [
                (
                    d.id,
                    d.configuration_name,
                    d.datasource_id or "",
                    ", ".join(f"{r.model_name}:{r.status}" for r in d.results),
                )
                for d in ds
            ],
            ["id", "configuration", "datasource", "models"],
        ),
    )


@train.command("show")
@click.argument("deployment_id", type=int)
@json_option
def train_show(deployment_id: int, as_json: bool) -> None:
    """One deployment with its results (metrics, time, errors)."""
    emit(client_from_env().get_deployment(deployment_id), as_json, deployment_text)


@train.command("stop")
@click.argument("deployment_id", type=int)
def train_stop(deployment_id: int) -> None:
    """Stop a deployment's training (frees its Ray resources)."""
    click.echo(deployment_text(client_from_env().stop_training(deployment_id)))


@train.command("resume")
@click.argument("result_id", type=int)
@json_option
def train_resume(result_id: int, as_json: bool) -> None:
    """Train a failed or stopped online result again, from its last checkpoint and offsets."""
    r = client_from_env().resume_training(result_id)
    emit(r, as_json, lambda r: f"result {r.id}: {r.status} ({r.progress.get('phase', '')})")


@train.command("follow")
@click.argument("deployment_id", type=int)
@click.option("--interval", default=0.5, show_default=True, help="Seconds between updates.")
def train_follow(deployment_id: int, interval: float) -> None:
    """Live progress bars per model (epoch, batches, latest metrics) until all are done."""
    dep = follow(client_from_env(), deployment_id, interval)
    click.echo(results_table(dep.results))
