"""``up``, ``down`` and ``status``: the local stack as one."""

from __future__ import annotations

import click

from kafkaml_ray._private.text import (
    parts_text,
)
from kafkaml_ray.cli.kit import (
    emit,
    json_option,
    settings_from_env,
)

__all__ = ["up", "down", "status"]


@click.command()
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


@click.command()
@json_option
def down(as_json: bool) -> None:
    """Stop the local stack."""
    from kafkaml_ray import stack

    emit(stack.down(settings_from_env()), as_json, parts_text)


@click.command()
@json_option
def status(as_json: bool) -> None:
    """Each part of the stack, whether it runs, and its address."""
    from kafkaml_ray import stack

    emit(stack.status(settings_from_env()), as_json, parts_text)
