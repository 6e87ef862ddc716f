"""Online training through a concept drift, on a running stack (``kafkaml-ray up``):

    python examples/online_digits.py

1. deploys the PyTorch digits CNN for online training: windows of 150 images, two epochs
   on each, a new version whenever the model beats the published one by 0.02 in accuracy on
   the window's held-out share;
2. streams the digits in bursts through an online ``RawSink``; once version 1 is out, serves
   the result with ``follow=True``;
3. sends the same 1,500 images again with the labels remapped (``y -> (y + 1) % 10``): the
   model's prequential accuracy falls, it learns the new mapping, and new versions are
   published;
4. sends held-out images to the inference after the drift and measures, on its output topic,
   the accuracy against the new labels and the version that answered;
5. stops the run and prints the learning curve, window by window.
"""

from __future__ import annotations

import json
import time
import uuid

import numpy as np
from confluent_kafka import Consumer
from sklearn.datasets import load_digits

from kafkaml_ray import Client, Settings
from kafkaml_ray.demo import register_examples
from kafkaml_ray.ingest import InferenceProducer, RawSink


def main() -> None:
    settings = Settings.from_env()
    client = Client(settings)
    x, y = load_digits(return_X_y=True)
    x, y = x.astype(np.float32).reshape(-1, 8, 8), y.astype(np.int64)
    x_held, y_held = x[1500:], y[1500:]
    # 3. the drift: the same 1,500 images twice, the second time with labels y -> (y + 1) % 10
    x_stream = np.concatenate([x[:1500], x[:1500]])
    y_stream = np.concatenate([y[:1500], (y[:1500] + 1) % 10])
    tag = uuid.uuid4().hex[:6]

    ids = register_examples(client, ["digits-cnn-pytorch"])
    config = client.create_configuration(f"online-digits-{tag}", list(ids.values()))
    dep = client.deploy_training(
        config.id,
        kwargs="epochs=2",
        online={
            "window_messages": 150,
            "window_seconds": 2,
            "validation_rate": 0.2,
            "monitoring_metric": "accuracy",
            "change": "up",
            "improvement": 0.02,
            "stream_timeout_s": -1,
        },
    )
    result_id = dep.results[0].id
    print(f"1. deployment {dep.id} trains online; result {result_id}")

    sink = RawSink(
        settings.bootstrap_servers,
        f"online-digits-{tag}",
        dep.id,
        online=True,
        validation_rate=0.2,
        control_topic=settings.control_topic,
    )
    inp, out = f"online-in-{tag}", f"online-out-{tag}"
    half = len(x_stream) // 2
    for start in range(0, len(x_stream), 150):  # a burst every two seconds
        sink.send_many(x_stream[start : start + 150], y_stream[start : start + 150])
        if start == 0:
            _wait(lambda: client.list_versions(result_id), "version 1")
            inf = client.deploy_inference(result_id, inp, out, follow=True)
            print(f"2. inference {inf.id} serves result {result_id}, following its versions")
        if start < half <= start + 150:
            print(f"3. labels remapped from message {half} on")
        time.sleep(2)
    _wait(lambda: _trained(client, result_id) >= len(x_stream), "every image trained")

    accuracy, versions = _score(settings, inp, out, x_held, (y_held + 1) % 10)
    print(
        f"4. after the drift the followed inference answers {len(x_held)} held-out images "
        f"with version(s) {versions}: accuracy {accuracy:.1%} against the new labels"
    )
    client.stop_training(dep.id)
    published = {v.window: v.version for v in client.list_versions(result_id)}
    print("5. window  prequential accuracy  published")
    for w in client.list_windows(result_id):
        mark = f"version {published[w.window]}" if w.window in published else ""
        acc = w.prequential.get("accuracy", float("nan"))
        print(f"   {w.window:6d}  {acc:20.3f}  {mark}")
    client.delete_inference(inf.id)


def _wait(predicate, what: str, timeout: float = 300) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise SystemExit(f"timed out waiting for {what}")
        time.sleep(1)


def _trained(client: Client, result_id: int) -> int:
    return sum(w.messages for w in client.list_windows(result_id))


def _score(settings, inp, out, x, y) -> tuple[float, list[int]]:
    """Send ``x`` keyed by index; the accuracy of the answers on ``out`` against ``y`` and
    the versions named in their headers."""
    consumer = Consumer(  # (nothing was sent to the inference before: all its outputs)
        settings.kafka_config(**{"group.id": uuid.uuid4().hex, "auto.offset.reset": "earliest"})
    )
    consumer.subscribe([out])
    producer = InferenceProducer(
        settings.bootstrap_servers, inp, "RAW", {"data_type": "float32", "data_reshape": "8 8"}
    )
    for i, sample in enumerate(x):
        producer.send(sample, key=str(i).encode())
    producer.flush()
    predicted, versions = {}, set()
    deadline = time.monotonic() + 120
    while len(predicted) < len(x) and time.monotonic() < deadline:
        for m in consumer.consume(num_messages=500, timeout=0.5):
            if m.error() is None and m.key() is not None:
                predicted[int(m.key())] = int(np.argmax(json.loads(m.value())["values"]))
                versions.add(int(dict(m.headers())["kafkaml-model-version"]))
    consumer.close()
    right = sum(predicted.get(i) == int(label) for i, label in enumerate(y))
    return right / len(x), sorted(versions)


if __name__ == "__main__":
    main()
