"""What the command groups share: settings and client from the environment, JSON or text
output, one-line errors for users."""

from __future__ import annotations

import json
import sys
from collections.abc import Callable, Iterable, Sequence
from typing import Any, Literal, get_args, get_origin

import click
from pydantic import BaseModel
from sqlalchemy.exc import DBAPIError

from kafkaml_ray.errors import KafkaMLError, store_error_text
from kafkaml_ray.settings import Settings

__all__ = [
    "emit",
    "table",
    "json_option",
    "client_from_env",
    "settings_from_env",
    "UserErrorGroup",
    "parts_text",
    "metrics_text",
    "deployment_text",
    "results_table",
    "follow",
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


def table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain text table."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    if len(cells) == 1:
        return "(none)"
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


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


# -- texts shared by the command groups and the demo -----------------------------------
def parts_text(parts) -> str:
    return table(
        [(p.name, "running" if p.running else "stopped", p.address, p.detail) for p in parts],
        ["part", "state", "address", "detail"],
    )


def metrics_text(m: dict) -> str:
    """Numeric metrics as `name=value`, sorted by name."""
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(m.items()) if isinstance(v, int | float))


def deployment_text(d) -> str:
    head = (
        f"deployment {d.id} of configuration {d.configuration_name!r}: batch size {d.batch_size}"
        f", GPU per model {d.gpu_fraction:g}, datasource {d.datasource_id or '(waiting)'}"
        + (f", Ray job {d.job_id}" if d.job_id else "")
    )
    waits = [f"result {r.id}: {r.progress['waiting']}" for r in d.results if _waiting(r)]
    return "\n".join([head, results_table(d.results), *waits])


def _waiting(r) -> bool:
    return r.status == "training" and bool((r.progress or {}).get("waiting"))


def results_table(results) -> str:
    return table(
        [
            (
                r.id,
                r.model_name,
                r.framework,
                r.status,
                metrics_text(r.train_metrics),
                metrics_text(r.val_metrics),
                metrics_text(r.test_metrics),
                f"{r.training_time_s:.1f}s" if r.training_time_s else "",
                (r.error or "")[:120],
            )
            for r in results
        ],
        ["result", "model", "framework", "status", "train", "validation", "test", "time", "error"],
    )


def follow(client, deployment_id: int, interval: float = 0.5):
    """Show a progress bar per model of a deployment until every model is done; return it."""
    import time

    from tqdm.auto import tqdm

    dep = client.get_deployment(deployment_id)
    bars = {
        r.id: tqdm(total=1, desc=r.model_name, position=i, leave=True, unit="batch")
        for i, r in enumerate(dep.results)
    }
    said: dict[int, str] = {}
    while True:
        dep = client.get_deployment(deployment_id)
        for r in dep.results:
            bar, p = bars[r.id], r.progress or {}
            if _waiting(r) and said.get(r.id) != p["waiting"]:
                said[r.id] = p["waiting"]
                tqdm.write(f"{r.model_name}: {p['waiting']}")
            epochs, batches = p.get("epochs") or 1, p.get("batches") or 1
            epoch, batch = p.get("epoch") or 0, p.get("batch")
            done = (epoch - (0 if batch is None else 1)) * batches + (batch or 0)
            bar.total = epochs * batches
            bar.n = bar.total if r.status == "finished" else min(done, bar.total)
            bar.set_description(f"{r.model_name} [{r.status}] epoch {epoch}/{epochs}")
            bar.set_postfix_str(metrics_text(p.get("metrics") or {}) or p.get("phase", ""))
            bar.refresh()
        if dep.done:
            break
        time.sleep(interval)
    for bar in bars.values():
        bar.close()
    return dep
