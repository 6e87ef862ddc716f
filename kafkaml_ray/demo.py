"""The main job, end to end on embedded defaults (`kafkaml-ray demo`).

1. starts the local stack (embedded Kafka, local Ray, SQLite, a local artifact directory);
2. registers the example models (validated in Ray workers);
3. deploys a configuration of the PyTorch and the Keras digits CNNs for training: it waits
   for its data stream;
4. streams scikit-learn's 8x8 digits through a `RawSink` (Kafka-ML's wire format): the
   control message starts both trainings, in parallel, one Ray Train run each;
5. prints their comparison (metrics per subset, training time);
6. serves the better one as a Ray Serve application on Kafka topics, streams the held-out
   test images to its input topic and measures the accuracy on its output topic;
7. prints that result's lineage: datasource, deployment, code version, parameters,
   weights and the inference serving it.
"""

from __future__ import annotations

from pathlib import Path

import click
import numpy as np
from tqdm.auto import tqdm

from kafkaml_ray import stack
from kafkaml_ray.client import Client
from kafkaml_ray.errors import NotFound
from kafkaml_ray.ingest import InferenceProducer, RawSink
from kafkaml_ray.ingest.prediction import prediction_values
from kafkaml_ray.lineage import tree_text
from kafkaml_ray.settings import Settings

__all__ = ["run", "EXAMPLES"]

EXAMPLES_DIR = Path(__file__).resolve().parent / "examples"
EXAMPLES = {
    "digits-cnn-pytorch": ("pytorch", "digits_cnn_pytorch.py", "CNN for 8x8 digits, 10 classes"),
    "digits-cnn-keras": ("tensorflow", "digits_cnn_keras.py", "CNN for 8x8 digits, 10 classes"),
    "regression-mlp-pytorch": ("pytorch", "regression_mlp_pytorch.py", "MLP over 26 features"),
    "regression-mlp-keras": ("tensorflow", "regression_mlp_keras.py", "MLP over 26 features"),
    "digits-sgd-sklearn": ("sklearn", "digits_sgd_sklearn.py", "linear classifier for 8x8 digits"),
    "regression-sgd-sklearn": ("sklearn", "regression_sgd_sklearn.py", "linear over 26 features"),
    "digits-trees-xgboost": ("xgboost", "digits_trees_xgboost.py", "boosted trees, 8x8 digits"),
    "regression-trees-xgboost": ("xgboost", "regression_trees_xgboost.py", "boosted trees, 26"),
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


def run(settings: Settings, keep_running: bool = True, epochs: int = 10) -> dict[str, float]:
    """The whole pipeline; returns the figures it printed (accuracies, throughput)."""
    from kafkaml_ray._private.text import follow, parts_text, results_table, table

    _check_installed()
    figures: dict[str, float] = {}
    click.secho("1. starting the local stack", bold=True)
    click.echo(parts_text(stack.up(settings)))
    client = Client(settings)

    click.secho("\n2. registering the example models (validated in Ray workers)", bold=True)
    ids = register_examples(client)
    click.echo(
        table(
            [
                (m.id, m.name, m.framework, m.input_shape, m.output_shape, m.parameters)
                for m in client.list_models()
            ],
            ["id", "name", "framework", "input", "output", "params"],
        )
    )

    click.secho("\n3. deploying the digits models of every framework for training", bold=True)
    name = "digits-models"
    try:
        config = client.get_configuration(name)
    except NotFound:
        digits = [ids[n] for n in EXAMPLES if n.startswith("digits-")]
        config = client.create_configuration(name, digits, "the demo's digits models")
    dep = client.deploy_training(config.id, batch_size=32, kwargs=f"epochs={epochs}")
    click.echo(f"deployment {dep.id}: waiting for its data stream")

    click.secho("\n4. streaming the digits data set through a RawSink", bold=True)
    x, y = _digits()
    with RawSink(
        settings.bootstrap_servers,
        f"demo-digits-{dep.id}",
        dep.id,
        validation_rate=0.1,
        test_rate=0.2,
        description="scikit-learn digits, 8x8",
        control_topic=settings.control_topic,
        progress=True,
    ) as sink:
        sink.send_many(x, y)
    click.echo(f"sent {len(x)} images; the control message names deployment {dep.id}")
    dep = follow(client, dep.id)

    click.secho("\n5. comparison", bold=True)
    click.echo(results_table(dep.results))
    finished = [r for r in dep.results if r.status == "finished"]
    if not finished:
        raise click.ClickException("no model finished training; see the errors above")
    for r in finished:
        figures[f"{r.model_name}_test_accuracy"] = float(r.test_metrics.get("accuracy", 0))
    best = max(finished, key=lambda r: r.test_metrics.get("accuracy", 0))

    click.secho(f"\n6. serving {best.model_name} (result {best.id}) on Kafka", bold=True)
    inp, out = f"demo-in-{best.id}", f"demo-out-{best.id}"
    inf = client.deploy_inference(best.id, inp, out)
    click.echo(f"inference {inf.id}: {inp} -> {out}")
    held_out = len(x) - int(len(x) * 0.8)  # the ordered split's test part: the newest 20%
    x_test, y_test = x[-held_out:], y[-held_out:]
    accuracy, rate = _stream_and_score(settings, inp, out, x_test, y_test)
    figures.update(inference_accuracy=accuracy, inference_msgs_per_s=rate)
    click.echo(
        f"{held_out} held-out images -> {held_out} predictions on {out}: "
        f"accuracy {accuracy:.1%} ({rate:.0f} images/s end to end, including start-up)"
    )
    click.secho(f"\n7. where result {best.id} came from, and what serves it", bold=True)
    click.echo(tree_text(client.lineage(best.id).model_dump()))
    if keep_running:
        click.echo(
            f"\nThe stack keeps running: `kafkaml-ray status`, `kafkaml-ray infer show {inf.id}`"
            ", `kafkaml-ray ui` for the control panel, `kafkaml-ray down` to stop."
        )
    else:
        client.delete_inference(inf.id)
        stack.down(settings)
    return figures


def _check_installed() -> None:
    """The demo trains in every framework on scikit-learn's digits: say what is missing
    before anything starts."""
    import importlib.util

    needs = {
        "sklearn": "scikit-learn",
        "skops": "skops",
        "torch": "torch",
        "tensorflow": "tensorflow",
        "xgboost": "xgboost-cpu",
    }
    missing = [pkg for mod, pkg in needs.items() if importlib.util.find_spec(mod) is None]
    if missing:
        raise click.ClickException(
            f"the demo needs {', '.join(missing)}: pip install 'kafkaml-ray[demo]'"
        )


def _digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    x, y = load_digits(return_X_y=True)
    return x.astype(np.float32).reshape(-1, 8, 8), y.astype(np.int64)


def _stream_and_score(
    settings: Settings, inp: str, out: str, x: np.ndarray, y: np.ndarray, timeout: float = 120
) -> tuple[float, float]:
    """Send ``x`` keyed by index, read one prediction per input from ``out``; return the
    accuracy against ``y`` and the images per second."""
    import time
    import uuid

    from confluent_kafka import Consumer

    consumer = Consumer(
        settings.kafka_config(
            **{"group.id": f"demo-{uuid.uuid4().hex}", "auto.offset.reset": "latest"}
        )
    )
    consumer.subscribe([out])
    consumer.poll(1.0)  # joins the group before the inputs go out
    start = time.monotonic()
    with InferenceProducer(  # (closed before the stack may go down: no reconnect noise)
        settings.bootstrap_servers, inp, "RAW", {"data_type": "float32", "data_reshape": "8 8"}
    ) as producer:
        for i, sample in enumerate(x):
            producer.send(sample, key=str(i).encode())
    predicted: dict[int, int] = {}
    deadline = start + timeout
    with tqdm(total=len(x), desc="predictions", unit="msg") as bar:
        while len(predicted) < len(x) and time.monotonic() < deadline:
            for m in consumer.consume(num_messages=500, timeout=0.5):
                if m.error() is None and m.key() is not None:
                    values = prediction_values(m.value())
                    predicted[int(m.key())] = int(np.argmax(values))
                    bar.update(1)
    elapsed = time.monotonic() - start
    consumer.close()
    if len(predicted) < len(x):
        raise click.ClickException(f"only {len(predicted)} of {len(x)} predictions came back")
    right = sum(predicted[i] == int(label) for i, label in enumerate(y))
    return right / len(x), len(x) / elapsed
