"""The ``datasource`` commands: the data streams that control messages announced."""

from __future__ import annotations

import json

import click

from kafkaml_ray._private.text import (
    table,
)
from kafkaml_ray.cli.kit import (
    client_from_env,
    emit,
    json_option,
)

__all__ = ["datasource"]


@click.group()
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
