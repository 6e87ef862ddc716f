"""``demo``: the main job, end to end on embedded defaults."""

from __future__ import annotations

import click

from kafkaml_ray.cli.kit import (
    settings_from_env,
)

__all__ = ["demo"]


@click.command()
@click.option("--keep-running/--stop", default=True, help="Leave the stack running afterwards.")
def demo(keep_running: bool) -> None:
    """The main job, end to end on embedded defaults."""
    from kafkaml_ray.demo import run

    run(settings_from_env(), keep_running=keep_running)
