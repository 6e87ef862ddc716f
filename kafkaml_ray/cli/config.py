"""The ``config`` commands: configurations, models trained and compared together."""

from __future__ import annotations

import click

from kafkaml_ray._private.text import (
    table,
)
from kafkaml_ray.cli.kit import (
    client_from_env,
    emit,
    json_option,
)

__all__ = ["config"]


@click.group()
def config() -> None:
    """Configurations: named sets of models trained together."""


def _config_text(c) -> str:
    models = ", ".join(f"{i} {n!r}" for i, n in zip(c.model_ids, c.model_names, strict=True))
    return f"configuration {c.id} {c.name!r}: {models}\n  description: {c.description}"


@config.command("create")
@click.argument("name")
@click.argument("model_args", metavar="[MODEL]...", nargs=-1)
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    help="A model id or name; repeat for several (or name them after NAME).",
)
@click.option("-d", "--description", default="")
@json_option
def config_create(name, model_args, models, description, as_json) -> None:
    """Create configuration NAME from models of any framework (ids or names):
    `config create digits cnn-torch cnn-keras`."""
    chosen = [*model_args, *models]
    if not chosen:
        raise click.UsageError("name at least one model: config create NAME MODEL...")
    emit(
        client_from_env().create_configuration(name, chosen, description),
        as_json,
        _config_text,
    )


@config.command("list")
@json_option
def config_list(as_json: bool) -> None:
    """Configurations."""
    emit(
        client_from_env().list_configurations(),
        as_json,
        lambda cs: table(
            [(c.id, c.name, ", ".join(c.model_names)) for c in cs], ["id", "name", "models"]
        ),
    )


@config.command("show")
@click.argument("ref")
@json_option
def config_show(ref: str, as_json: bool) -> None:
    """One configuration by id or name."""
    emit(client_from_env().get_configuration(ref), as_json, _config_text)


@config.command("delete")
@click.argument("ref")
def config_delete(ref: str) -> None:
    """Delete a configuration."""
    client_from_env().delete_configuration(ref)
    click.echo(f"deleted configuration {ref}")
