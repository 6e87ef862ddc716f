"""The ``model`` commands: register, list, show, version and delete model code."""

from __future__ import annotations

from pathlib import Path

import click

from kafkaml_ray import frameworks
from kafkaml_ray._private.text import (
    table,
)
from kafkaml_ray.cli.kit import (
    client_from_env,
    emit,
    json_option,
)

__all__ = ["model"]


@click.group()
def model() -> None:
    """Register, list, show and delete model code."""


def _model_text(m) -> str:
    return (
        f"model {m.id} {m.name!r} ({m.framework})\n"
        f"  input shape:  {m.input_shape}\n  output shape: {m.output_shape}\n"
        f"  parameters:   {m.parameters}\n  description:  {m.description}"
    )


@model.command("add")
@click.argument("name")
@click.option("-f", "--framework", type=click.Choice(frameworks.names()), required=True)
@click.option(
    "--file",
    "code_file",
    type=click.Path(exists=True, dir_okay=False),
    required=True,
    help="The model code (Kafka-ML style).",
)
@click.option(
    "--imports",
    "imports_file",
    type=click.Path(exists=True, dir_okay=False),
    help="A file of imports run before the code.",
)
@click.option("-d", "--description", default="")
@json_option
def model_add(name, framework, code_file, imports_file, description, as_json) -> None:
    """Validate model code in a Ray worker and register it as NAME."""
    imports = Path(imports_file).read_text() if imports_file else ""
    m = client_from_env().add_model(
        name, framework, Path(code_file).read_text(), imports, description
    )
    emit(m, as_json, _model_text)


@model.command("list")
@json_option
def model_list(as_json: bool) -> None:
    """Registered models."""
    emit(
        client_from_env().list_models(),
        as_json,
        lambda ms: table(
            [(m.id, m.name, m.framework, m.input_shape, m.output_shape, m.param_count) for m in ms],
            ["id", "name", "framework", "input", "output", "params"],
        ),
    )


@model.command("show")
@click.argument("ref")
@click.option("--code", is_flag=True, help="Also print the code.")
@json_option
def model_show(ref: str, code: bool, as_json: bool) -> None:
    """One model by id or name."""
    m = client_from_env().get_model(ref)
    emit(m, as_json, lambda m: _model_text(m) + (f"\n\n{m.imports}\n{m.code}" if code else ""))


@model.command("versions")
@click.argument("ref")
@click.option("--code", "number", type=int, default=None, help="Print version N's code.")
@json_option
def model_versions(ref: str, number: int | None, as_json: bool) -> None:
    """The versions of a model's code that its results trained with (updating the code adds
    one when it is next deployed); with --code N, that version's imports and code."""
    client = client_from_env()
    if number is not None:
        v = client.get_model_version(ref, number)
        emit(v, as_json, lambda v: f"{v.imports}\n{v.code}".strip())
        return
    emit(
        client.list_model_versions(ref),
        as_json,
        lambda vs: table(
            [(v.number, v.sha256[:12], v.created_at) for v in vs], ["version", "sha256", "added"]
        ),
    )


@model.command("delete")
@click.argument("ref")
def model_delete(ref: str) -> None:
    """Delete a model (refused while a configuration uses it)."""
    client_from_env().delete_model(ref)
    click.echo(f"deleted model {ref}")
