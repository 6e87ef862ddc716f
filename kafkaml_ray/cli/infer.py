"""`kafkaml-ray infer ...`: serve trained results over Kafka topics (and HTTP)."""

from __future__ import annotations

import json
import time

import click

from kafkaml_ray._private.text import table
from kafkaml_ray.cli.kit import client_from_env, emit, json_option, model_options
from kafkaml_ray.options import ServingOptions

__all__ = ["infer"]


@click.group()
def infer() -> None:
    """Serve trained models: Kafka input topic in, predictions out (Ray Serve)."""


def _inference_text(i) -> str:
    scaling = (
        f"autoscaled {i.min_replicas}..{i.max_replicas} on consumer lag"
        if i.min_replicas is not None
        else f"{i.replicas} replicas"
    )
    lines = [
        f"inference {i.id}: result {i.result_id} ({i.model_name}), {i.status}"
        + (" (follows its newest version)" if i.follow else "")
        + (f" (version {i.version})" if i.version else ""),
        f"  {i.input_topic} ({i.input_format} {json.dumps(i.input_config)}) -> "
        f"{i.output_topic} (dead letters: {i.output_topic}.dlq)",
        f"  {scaling}, batch {i.batch_size}, max wait {i.max_wait_ms} ms, "
        f"GPU fraction {i.gpu_fraction}",
        f"  live replicas {i.live_replicas}, consumed {i.consumed}, predicted {i.predicted}, "
        f"dead letters {i.dead_letters}, lag {i.lag}, {i.msgs_per_s:.0f} msgs/s",
        f'  HTTP: POST {{"data": [...]}} to http://127.0.0.1:<serve port>{i.route}',
    ]
    if i.error:
        lines.append(f"  error: {i.error}")
    if i.waiting:
        lines.append(f"  {i.waiting}")
    return "\n".join(lines)


@infer.command("deploy")
@click.argument("result_id", type=int)
@click.option("--input-topic", required=True, help="Topic the inputs arrive on.")
@click.option("--output-topic", required=True, help="Topic predictions go to.")
@click.option(
    "--input-format",
    type=click.Choice(["RAW", "AVRO", "JSON"], case_sensitive=False),
    default=None,
    help="Input format [default: that of the result's data stream].",
)
@click.option(
    "--input-config",
    default=None,
    help='Format settings as JSON, e.g. \'{"data_type": "float32", "data_reshape": "8 8"}\' '
    "[default: those of the result's data stream].",
)
@model_options(ServingOptions, gpu_fraction="--gpu")
@click.option(
    "--follow",
    is_flag=True,
    help="An online result: swap to each newly published version, in place.",
)
@click.option(
    "--version", type=int, help="An online result: serve this version [default: the newest]."
)
@json_option
def infer_deploy(
    result_id,
    input_topic,
    output_topic,
    input_format,
    input_config,
    follow,
    version,
    as_json,
    **options,
) -> None:
    """Serve RESULT_ID: read INPUT_TOPIC, write predictions to OUTPUT_TOPIC. Outputs of an
    online result name their version in a kafkaml-model-version header."""
    try:
        config = None if input_config is None else json.loads(input_config)
    except ValueError as e:
        raise click.BadParameter(f"not JSON: {e}", param_hint="--input-config") from None
    inf = client_from_env().deploy_inference(
        result_id,
        input_topic,
        output_topic,
        input_format=input_format,
        input_config=config,
        follow=follow,
        version=version,
        **options,
    )
    emit(inf, as_json, _inference_text)


@infer.command("list")
@json_option
def infer_list(as_json: bool) -> None:
    """Inferences with status, replicas, lag, throughput and errors."""
    rows = client_from_env().list_inferences()
    emit(
        rows,
        as_json,
        lambda rs: table(
            [
                (
                    i.id,
                    i.result_id,
                    i.model_name,
                    i.status,
                    i.input_topic,
                    i.output_topic,
                    i.live_replicas,
                    i.lag,
                    f"{i.msgs_per_s:.0f}",
                    i.predicted,
                    i.dead_letters,
                )
                for i in rs
            ],
            [
                "id",
                "result",
                "model",
                "status",
                "input",
                "output",
                "replicas",
                "lag",
                "msgs/s",
                "predicted",
                "dead letters",
            ],
        ),
    )


@infer.command("show")
@click.argument("inference_id", type=int)
@json_option
def infer_show(inference_id: int, as_json: bool) -> None:
    """One inference in detail, and the replicas it waits for (Ray resources), if any."""
    emit(client_from_env().get_inference(inference_id, live=True), as_json, _inference_text)


@infer.command("stop")
@click.argument("inference_id", type=int)
def infer_stop(inference_id: int) -> None:
    """Stop serving (committed offsets are kept: `restart` resumes there)."""
    click.echo(_inference_text(client_from_env().stop_inference(inference_id)))


@infer.command("restart")
@click.argument("inference_id", type=int)
def infer_restart(inference_id: int) -> None:
    """Serve a stopped inference again, from its committed offsets."""
    click.echo(_inference_text(client_from_env().restart_inference(inference_id)))


@infer.command("delete")
@click.argument("inference_id", type=int)
def infer_delete(inference_id: int) -> None:
    """Stop and forget an inference (its topics stay)."""
    client_from_env().delete_inference(inference_id)
    click.echo(f"deleted inference {inference_id}")


@infer.command("tap")
@click.argument("inference_id", type=int)
@click.option("-n", type=int, default=10, show_default=True, help="How many.")
@click.option("--dead-letters", is_flag=True, help="Read the dead-letter topic instead.")
@click.option("--follow", is_flag=True, help="Keep showing new ones (Ctrl-C to end).")
@json_option
def infer_tap(inference_id: int, n: int, dead_letters: bool, follow: bool, as_json: bool) -> None:
    """The latest predictions (or dead letters), read without joining the consumer group."""
    client, last = client_from_env(), (-1, -1)
    while True:
        rows = client.tap(inference_id, n=n, dead_letters=dead_letters)
        new = [p for p in rows if (p.timestamp_ms, p.offset) > last]
        if new:
            last = max((p.timestamp_ms, p.offset) for p in new)
            emit(new, as_json, _predictions_text)
        if not follow:
            return
        time.sleep(1.0)


def classify(values: list[float]) -> tuple[int, float]:
    """The class and its confidence of a classifier's output (probabilities, or logits
    turned into them).

    >>> classify([0.1, 0.7, 0.2])
    (1, 0.7)
    >>> c, p = classify([0.0, 2.0]); c, round(p, 3)
    (1, 0.881)
    """
    import math

    best = max(range(len(values)), key=values.__getitem__)
    if all(v >= 0 for v in values) and abs(sum(values) - 1) < 1e-3:
        return best, float(values[best])
    top = values[best]
    return best, 1 / sum(math.exp(v - top) for v in values)


def _predictions_text(rows) -> str:
    def shown(p) -> str:
        if p.error:
            return f"error: {p.error}"
        v = p.values
        if isinstance(v, list) and len(v) > 1 and all(isinstance(x, int | float) for x in v):
            c, confidence = classify(v)
            return f"class {c} ({confidence:.1%})"
        return json.dumps(v)

    return table(
        [(p.partition, p.offset, p.key, shown(p)) for p in rows],
        ["partition", "offset", "key", "prediction"],
    )
