"""What the command groups share: settings and client from the environment, JSON or text
output, options from the options models, one-line errors for users."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from typing import Any, Literal, get_args, get_origin

import click
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from kafkaml_ray.errors import KafkaMLError, store_error_text
from kafkaml_ray.settings import Settings

__all__ = [
    "emit",
    "json_option",
    "model_options",
    "client_from_env",
    "settings_from_env",
    "UserErrorGroup",
]


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
        ctx = click.get_current_context(silent=True)
        out = ctx.meta.get(_JSON_OUT, sys.stdout) if ctx else sys.stdout
        click.echo(json.dumps(_jsonable(obj), indent=2, default=str), file=out)
    else:
        click.echo(text(obj))


_JSON_OUT = "kafkaml_ray.json_out"


def _json_alone_on_stdout(ctx: click.Context, param: click.Parameter, value: bool) -> bool:
    """With ``--json``, stdout carries the JSON alone: whatever else is printed until the
    process ends goes to stderr (Ray's driver prints raylet warnings to stdout from a
    thread of its own, at any time)."""
    if value and _JSON_OUT not in ctx.meta:
        ctx.meta[_JSON_OUT] = sys.stdout
        sys.stdout = sys.stderr
    return value


json_option = click.option(
    "--json",
    "as_json",
    is_flag=True,
    callback=_json_alone_on_stdout,
    help="Print JSON for scripts (alone on stdout).",
)


def model_options(model: type[BaseModel], **spellings: str) -> Callable[[Callable], Callable]:
    """Click options for the fields of a pydantic options model (`ServingOptions`,
    `TrainingOptions`, `OnlineOptions`): names, types, defaults and help come from the
    model, so the command and the API cannot drift apart. ``spellings`` gives a field other
    flags, e.g. ``gpu_fraction="--gpu"``, ``batch_size="-b --batch-size"``. A bool becomes
    an on/off pair, a ``Literal`` a choice; the model itself checks the values.
    """

    def decorate(command: Callable) -> Callable:
        for name, field in reversed(model.model_fields.items()):
            flags = spellings.get(name, "--" + name.replace("_", "-")).split()
            kinds = [a for a in (field.annotation, *get_args(field.annotation)) if a]
            kwargs: dict[str, Any] = {"help": field.description, "default": field.default}
            if field.annotation is bool:
                flags[-1] = f"{flags[-1]}/--no-{flags[-1].removeprefix('--')}"
            elif literal := [a for a in kinds if get_origin(a) is Literal]:  # (or None)
                kwargs["type"] = click.Choice(get_args(literal[0]))
            else:
                kwargs["type"] = float if float in kinds else int if int in kinds else str
            kwargs["show_default"] = field.default is not None
            command = click.option(*flags, name, **kwargs)(command)
        return command

    return decorate


class UserErrorGroup(click.Group):
    def invoke(self, ctx):
        try:
            return super().invoke(ctx)
        except KafkaMLError as e:
            click.echo(f"error: {e}", err=True)
            sys.exit(1)
        except DBAPIError as e:  # (the metadata store's own refusal, in one line)
            click.echo(f"error: {store_error_text(e)}", err=True)
            sys.exit(1)
