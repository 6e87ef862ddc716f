"""The online benchmark's baseline, run in a fresh spawned process: a plain consumer loop, and
a static model (`benchmarks.online` compares ours against them).
"""

from __future__ import annotations

import multiprocessing
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

import numpy as np

__all__ = ["plain_online", "static_model", "fresh", "MODEL", "WINDOW", "BATCH", "EPOCHS"]

#: the model, and the window, batch and epochs both sides train with
MODEL = "digits-cnn-pytorch"
WINDOW = 256
BATCH = 32
EPOCHS = 1


def _spec(settings: Any, code: str) -> Any:
    """The `RunSpec` an online run of the example model gets from ``deploy_training(...,
    batch_size=BATCH, kwargs="epochs=1")``."""
    from kafkaml_ray.train.reporter import RunSpec

    return RunSpec(
        result_id=0,
        model_name=MODEL,
        framework="pytorch",
        code=code,
        imports="",
        batch_size=BATCH,
        settings=settings,
        train_args={"epochs": EPOCHS},
        input_shape=[8, 8],
    )


def plain_online(settings: Any, code: str, topic: str, windows: int, threads: int) -> dict:
    """A plain loop: a confluent-kafka consumer reads ``topic`` from offset 0 in windows of
    ``WINDOW``; per window, the same learner's ``score`` then ``fit``."""
    start = time.time()
    import torch
    from confluent_kafka import Consumer, TopicPartition

    from kafkaml_ray import frameworks
    from kafkaml_ray.frameworks.data import floats

    torch.set_num_threads(threads)
    group = f"plain-online-{uuid.uuid4().hex[:8]}"
    consumer = Consumer(settings.kafka_config(**{"group.id": group, "enable.auto.commit": False}))
    consumer.assign([TopicPartition(topic, 0, 0)])
    learner = frameworks.get("pytorch").learner(_spec(settings, code))
    rows: list[dict[str, Any]] = []
    deadline = time.monotonic() + 600
    while len(rows) < windows and time.monotonic() < deadline:
        msgs: list[Any] = []
        while len(msgs) < WINDOW and time.monotonic() < deadline:
            got = consumer.consume(num_messages=WINDOW - len(msgs), timeout=1.0)
            msgs += [m for m in got if m.error() is None]
        x = np.frombuffer(b"".join(m.value() for m in msgs), np.float32).reshape(-1, 8, 8)
        y = np.frombuffer(b"".join(m.key() for m in msgs), np.int64)
        prequential = floats(learner.score(x, y))
        trained = floats(learner.fit(x, y, EPOCHS))
        rows.append(
            {"t": time.time(), "messages": len(msgs), "prequential": prequential, "train": trained}
        )
    consumer.close()
    return {"start": start, "windows": rows, "threads": torch.get_num_threads()}


def static_model(settings: Any, code: str, x: np.ndarray, y: np.ndarray, threads: int) -> dict:
    """The model trained once on the first half (``EPOCHS`` over it, the same budget as
    ours), then only scored, window by window, on the second half."""
    import torch

    from kafkaml_ray import frameworks
    from kafkaml_ray.frameworks.data import floats

    torch.set_num_threads(threads)
    half = len(x) // 2
    learner = frameworks.get("pytorch").learner(_spec(settings, code))
    learner.fit(x[:half], y[:half], EPOCHS)
    scores = [
        floats(learner.score(x[i : i + WINDOW], y[i : i + WINDOW]))
        for i in range(half, len(x), WINDOW)
    ]
    return {"first_window": half // WINDOW + 1, "windows": scores}


def fresh() -> ProcessPoolExecutor:
    """A fresh process (spawned), as each of our runs is a fresh Ray worker."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
