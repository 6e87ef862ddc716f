"""The main job, end to end on embedded defaults (`kafkaml-ray demo`).

Starts the local stack (embedded Kafka, local Ray, SQLite, a local artifact directory),
registers the example models and shows what their validation found.
"""

from __future__ import annotations

from pathlib import Path

import click

from kafkaml_ray import stack
from kafkaml_ray.client import Client
from kafkaml_ray.errors import NotFound
from kafkaml_ray.settings import Settings

__all__ = ["run", "EXAMPLES"]

EXAMPLES_DIR = Path(__file__).resolve().parent.parent / "examples"
EXAMPLES = {
    "digits-cnn-pytorch": ("pytorch", "digits_cnn_pytorch.py", "CNN for 8x8 digits, 10 classes"),
    "digits-cnn-keras": ("tensorflow", "digits_cnn_keras.py", "CNN for 8x8 digits, 10 classes"),
    "regression-mlp-pytorch": ("pytorch", "regression_mlp_pytorch.py", "MLP over 26 features"),
    "regression-mlp-keras": ("tensorflow", "regression_mlp_keras.py", "MLP over 26 features"),
}


def register_examples(client: Client, names=tuple(EXAMPLES)) -> dict[str, int]:
    """Register the example models that are not registered yet; return their ids."""
    ids = {}
    for name in names:
        framework, filename, description = EXAMPLES[name]
        try:
            ids[name] = client.get_model(name).id
        except NotFound:
            code = (EXAMPLES_DIR / filename).read_text()
            ids[name] = client.add_model(name, framework, code, description=description).id
    return ids


def run(settings: Settings, keep_running: bool = True) -> None:
    from kafkaml_ray.cli import _parts_text, table

    click.secho("1. starting the local stack", bold=True)
    click.echo(_parts_text(stack.up(settings)))
    client = Client(settings)
    click.secho("\n2. registering the example models (validated in Ray workers)", bold=True)
    register_examples(client)
    click.echo(
        table(
            [
                (m.id, m.name, m.framework, m.input_shape, m.output_shape, f"{m.param_count:,}")
                for m in client.list_models()
            ],
            ["id", "name", "framework", "input", "output", "params"],
        )
    )
    if not keep_running:
        stack.down(settings)
