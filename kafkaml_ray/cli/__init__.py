"""The `kafkaml-ray` command line, one module per command group (and `kit`, what they
share). Every command has --help; list/show take --json."""

from __future__ import annotations

import logging

import click

from kafkaml_ray.cli.broker import broker
from kafkaml_ray.cli.config import config
from kafkaml_ray.cli.datasource import datasource
from kafkaml_ray.cli.demo import demo
from kafkaml_ray.cli.infer import infer
from kafkaml_ray.cli.k8s import k8s
from kafkaml_ray.cli.kit import UserErrorGroup
from kafkaml_ray.cli.model import model
from kafkaml_ray.cli.result import result
from kafkaml_ray.cli.stack import down, status, up
from kafkaml_ray.cli.train import train
from kafkaml_ray.cli.tune import tune
from kafkaml_ray.cli.ui import ui_command

__all__ = ["main", "cli"]


COMMANDS = [
    up, down, status, broker, model, config, datasource, train, tune, result, infer, k8s,
    ui_command, demo,
]  # fmt: skip


@click.group(cls=UserErrorGroup, commands=COMMANDS)
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


def main() -> None:
    cli(prog_name="kafkaml-ray")
