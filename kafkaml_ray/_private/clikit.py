"""What the command groups share: settings and client from the environment, JSON or text
output, one-line errors for users."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import click
from pydantic import BaseModel

from kafkaml_ray.errors import KafkaMLError
from kafkaml_ray.settings import Settings

__all__ = ["emit", "table", "json_option", "client_from_env", "settings_from_env", "UserErrorGroup"]


def settings_from_env() -> Settings:
    return Settings.from_env()


def client_from_env():
    from kafkaml_ray.client import Client

    return Client(settings_from_env())


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


class UserErrorGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KafkaMLError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
