"""The `kafkaml-ray` command line. Every command has --help; list/show take --json."""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import click
from pydantic import BaseModel

from kafkaml_ray.errors import KafkaMLError
from kafkaml_ray.settings import Settings

__all__ = ["main", "cli"]


def _settings() -> Settings:
    return Settings.from_env()


def _client():
    from kafkaml_ray.client import Client

    return Client(_settings())


def _jsonable(obj: Any) -> Any:
    if isinstance(obj, BaseModel):
        return obj.model_dump(mode="json")
    if isinstance(obj, list | tuple):
        return [_jsonable(o) for o in obj]
    if hasattr(obj, "__dataclass_fields__"):
        from dataclasses import asdict

        return asdict(obj)
    return obj


def emit(obj: Any, as_json: bool, text: Callable[[Any], str]) -> None:
    """Print ``obj`` as JSON (for scripts) or as text for people."""
    if as_json:
        click.echo(json.dumps(_jsonable(obj), indent=2, default=str))
    else:
        click.echo(text(obj))


def table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain text table."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    if len(cells) == 1:
        return "(none)"
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")


class _Group(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KafkaMLError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)


@click.group(cls=_Group)
@click.option("-v", "--verbose", is_flag=True, help="Log what happens.")
@click.version_option(package_name="kafkaml-ray")
def cli(verbose: bool) -> None:
    """kafkaml-ray: train and serve ML models straight from Kafka streams, on Ray.

    Settings come from the environment: KAFKAML_HOME (data directory, ~/.kafkaml-ray),
    KAFKAML_BOOTSTRAP (an existing Kafka; unset = the embedded broker), KAFKAML_BROKER_PORT,
    KAFKAML_DB, KAFKAML_ARTIFACTS, RAY_ADDRESS, KAFKAML_CONTROL_TOPIC, KAFKAML_KAFKA_* (librdkafka
    settings such as KAFKAML_KAFKA_SECURITY_PROTOCOL).
    """
    logging.basicConfig(
        level=logging.INFO if verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )


# -- broker --------------------------------------------------------------------------------
@cli.group()
def broker() -> None:
    """The embedded Apache Kafka broker (KRaft, single node, on 127.0.0.1)."""


def _broker():
    from kafkaml_ray.broker import EmbeddedKafka

    settings = _settings()
    if not settings.embedded_broker:
        raise click.UsageError(
            f"KAFKAML_BOOTSTRAP is set ({settings.bootstrap}): the embedded broker is not used"
        )
    return EmbeddedKafka(settings)


def _broker_text(s) -> str:
    state = f"running (pid {s.pid})" if s.running else "stopped"
    return f"kafka {s.version}: {state} on {s.address}\nlog directory: {s.log_dir}"


@broker.command("start")
@json_option
def broker_start(as_json: bool) -> None:
    """Start the broker (resolving its jars with Maven the first time); harmless twice."""
    emit(_broker().start(), as_json, _broker_text)


@broker.command("stop")
def broker_stop() -> None:
    """Stop the broker; its topics stay on disk for the next start."""
    click.echo("stopped" if _broker().stop() else "not running")


@broker.command("status")
@json_option
def broker_status(as_json: bool) -> None:
    """Where the broker runs, its version and log directory."""
    emit(_broker().status(), as_json, _broker_text)


# -- stack ---------------------------------------------------------------------------------
def _parts_text(parts) -> str:
    return table(
        [(p.name, "running" if p.running else "stopped", p.address, p.detail) for p in parts],
        ["part", "state", "address", "detail"],
    )


@cli.command()
@click.option("--ui/--no-ui", default=False, help="Also serve the control panel.")
@json_option
def up(ui: bool, as_json: bool) -> None:
    """Start the local stack: Kafka broker, Ray head, control listener (and UI)."""
    from kafkaml_ray import stack

    emit(stack.up(_settings(), with_ui=ui), as_json, _parts_text)


@cli.command()
@json_option
def down(as_json: bool) -> None:
    """Stop the local stack."""
    from kafkaml_ray import stack

    emit(stack.down(_settings()), as_json, _parts_text)


@cli.command()
@json_option
def status(as_json: bool) -> None:
    """Each part of the stack, whether it runs, and its address."""
    from kafkaml_ray import stack

    emit(stack.status(_settings()), as_json, _parts_text)


# -- models --------------------------------------------------------------------------------
@cli.group()
def model() -> None:
    """Register, list, show and delete model code."""


def _model_text(m) -> str:
    return (
        f"model {m.id} {m.name!r} ({m.framework})\n"
        f"  input shape:  {m.input_shape}\n  output shape: {m.output_shape}\n"
        f"  parameters:   {m.param_count:,}\n  description:  {m.description}"
    )


@model.command("add")
@click.argument("name")
@click.option("-f", "--framework", type=click.Choice(["pytorch", "tensorflow"]), required=True)
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
    m = _client().add_model(name, framework, Path(code_file).read_text(), imports, description)
    emit(m, as_json, _model_text)


@model.command("list")
@json_option
def model_list(as_json: bool) -> None:
    """Registered models."""
    emit(
        _client().list_models(),
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
    m = _client().get_model(ref)
    emit(m, as_json, lambda m: _model_text(m) + (f"\n\n{m.imports}\n{m.code}" if code else ""))


@model.command("delete")
@click.argument("ref")
def model_delete(ref: str) -> None:
    """Delete a model (refused while a configuration uses it)."""
    _client().delete_model(ref)
    click.echo(f"deleted model {ref}")


# -- configurations ------------------------------------------------------------------------
@cli.group()
def config() -> None:
    """Configurations: named sets of models trained together."""


def _config_text(c) -> str:
    models = ", ".join(f"{i} {n!r}" for i, n in zip(c.model_ids, c.model_names, strict=True))
    return f"configuration {c.id} {c.name!r}: {models}\n  description: {c.description}"


@config.command("create")
@click.argument("name")
@click.option(
    "-m",
    "--model",
    "models",
    multiple=True,
    required=True,
    help="A model id or name; repeat for several.",
)
@click.option("-d", "--description", default="")
@json_option
def config_create(name, models, description, as_json) -> None:
    """Create configuration NAME from models of either framework."""
    emit(_client().create_configuration(name, list(models), description), as_json, _config_text)


@config.command("list")
@json_option
def config_list(as_json: bool) -> None:
    """Configurations."""
    emit(
        _client().list_configurations(),
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
    emit(_client().get_configuration(ref), as_json, _config_text)


@config.command("delete")
@click.argument("ref")
def config_delete(ref: str) -> None:
    """Delete a configuration."""
    _client().delete_configuration(ref)
    click.echo(f"deleted configuration {ref}")


# -- the main job --------------------------------------------------------------------------
@cli.command()
@click.option("--keep-running/--stop", default=True, help="Leave the stack running afterwards.")
def demo(keep_running: bool) -> None:
    """The main job, end to end on embedded defaults."""
    from kafkaml_ray.demo import run

    run(_settings(), keep_running=keep_running)


def main() -> None:
    cli(prog_name="kafkaml-ray")


if __name__ == "__main__":
    main()
