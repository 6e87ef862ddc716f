"""The ``broker`` commands: the embedded Apache Kafka broker."""

from __future__ import annotations

import click

from kafkaml_ray.cli.kit import (
    emit,
    json_option,
    settings_from_env,
)

__all__ = ["broker"]


@click.group()
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
