"""The `kafkaml-ray` command line. Every command has --help; list/show take --json."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import click

from kafkaml_ray._private.clikit import (
    UserErrorGroup,
    client_from_env,
    emit,
    json_option,
    parts_text,
    settings_from_env,
    table,
)

__all__ = ["main", "cli"]


@click.group(cls=UserErrorGroup)
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

    settings = settings_from_env()
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
@cli.command()
@click.option("--ui/--no-ui", default=True, show_default=True, help="Also serve the control panel.")
@json_option
def up(ui: bool, as_json: bool) -> None:
    """Start the local stack: Kafka broker, Ray head, control listener (and UI); then
    resume, fail or redeploy what a restart cut off (online runs resume from their
    checkpoints, inferences are deployed again)."""
    from kafkaml_ray import stack
    from kafkaml_ray.client import Client
    from kafkaml_ray.recovery import reconcile

    settings = settings_from_env()
    if ui:
        from kafkaml_ray.panel import show_new_password

        show_new_password(settings)
    parts = stack.up(settings, with_ui=ui)
    for line in reconcile(Client(settings)):
        click.echo(f"after the restart: {line}", err=True)
    emit(parts, as_json, parts_text)


@cli.command()
@json_option
def down(as_json: bool) -> None:
    """Stop the local stack."""
    from kafkaml_ray import stack

    emit(stack.down(settings_from_env()), as_json, parts_text)


@cli.command()
@json_option
def status(as_json: bool) -> None:
    """Each part of the stack, whether it runs, and its address."""
    from kafkaml_ray import stack

    emit(stack.status(settings_from_env()), as_json, parts_text)


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


# -- configurations ------------------------------------------------------------------------
@cli.group()
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
    """Create configuration NAME from models of either framework (ids or names):
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


# -- datasources ---------------------------------------------------------------------------
@cli.group()
def datasource() -> None:
    """Data streams announced by control messages; re-send one to another deployment."""


def _datasource_text(d) -> str:
    return (
        f"datasource {d.id} for deployment {d.deployment_id}: {d.status}"
        + (f" ({d.error})" if d.error else "")
        + (f"\n  expired: {d.expired}" if d.expired else "")
        + f"\n  ranges: {d.topic}\n  format: {d.input_format} {json.dumps(d.input_config)}"
        + f"\n  messages: {d.total_msg}, malformed skipped: {d.malformed_count}"
        + f"\n  validation rate {d.validation_rate:g}, test rate {d.test_rate:g}"
        + f"\n  control message at {d.source_topic}:{d.source_partition}:{d.source_offset}"
    )


@datasource.command("list")
@json_option
def datasource_list(as_json: bool) -> None:
    """Stored control messages, accepted or refused; "expired" where Kafka no longer holds
    the data (retention deleted it)."""
    emit(
        client_from_env().list_datasources(),
        as_json,
        lambda ds: table(
            [
                (
                    d.id,
                    d.deployment_id,
                    "expired" if d.expired else d.status,
                    d.input_format,
                    d.total_msg,
                    d.malformed_count,
                    d.topic[:60],
                    (d.error or "")[:80],
                )
                for d in ds
            ],
            ["id", "deployment", "status", "format", "messages", "malformed", "ranges", "error"],
        ),
    )


@datasource.command("show")
@click.argument("datasource_id", type=int)
@json_option
def datasource_show(datasource_id: int, as_json: bool) -> None:
    """One datasource."""
    emit(client_from_env().get_datasource(datasource_id), as_json, _datasource_text)


@datasource.command("resend")
@click.argument("datasource_id", type=int)
@click.option("-d", "--deployment", "deployment_id", type=int, required=True)
def datasource_resend(datasource_id: int, deployment_id: int) -> None:
    """Train DEPLOYMENT on a stored stream without sending its data again."""
    client_from_env().resend_datasource(datasource_id, deployment_id)
    click.echo(f"re-sent datasource {datasource_id} to deployment {deployment_id}")


# -- the main job --------------------------------------------------------------------------
@cli.command()
@click.option("--keep-running/--stop", default=True, help="Leave the stack running afterwards.")
def demo(keep_running: bool) -> None:
    """The main job, end to end on embedded defaults."""
    from kafkaml_ray.demo import run

    run(settings_from_env(), keep_running=keep_running)


def _register_groups() -> None:
    from kafkaml_ray.kuberay.cli import k8s
    from kafkaml_ray.panel import ui_command
    from kafkaml_ray.results_cli import result, tune_export
    from kafkaml_ray.serve.cli import infer
    from kafkaml_ray.train.cli import train, tune

    cli.add_command(infer)
    cli.add_command(k8s)
    cli.add_command(train)
    cli.add_command(tune)
    cli.add_command(ui_command)
    cli.add_command(result)
    tune.add_command(tune_export)  # (MLflow export sits above the train layer)


_register_groups()


def main() -> None:
    cli(prog_name="kafkaml-ray")
