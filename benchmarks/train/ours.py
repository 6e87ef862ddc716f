"""Our runs: a deployment of one or more models started by a control message, as
``kafkaml-ray up``'s control listener starts it, followed through the store until every
result is finished (`run_ours`: its times, start-up phases and accuracies); a client with
that listener started (`client_with_listener`), and the threads a 1-CPU Ray worker gets
(`ray_worker_threads`)."""

from __future__ import annotations

import dataclasses
import os
import time
import uuid
from typing import Any

from kafkaml_ray.settings import Settings

__all__ = [
    "POLL_S",
    "PRODUCED_TOPIC",
    "announce",
    "run_ours",
    "ray_worker_threads",
    "client_with_listener",
]

POLL_S = 0.1
#: Where `RawSink` announces the produced data: not the control topic, so the listener never
#: sees it; every timed run is started by a control message of its own.
PRODUCED_TOPIC = "benchmark-produced"


def announce(settings: Settings, msg, deployment_id: int) -> None:
    """Send the stream's control message, naming ``deployment_id``, to the control topic."""
    from confluent_kafka import Producer

    key, value, headers = dataclasses.replace(msg, deployment_id=deployment_id).to_kafka()
    producer = Producer(settings.kafka_config())
    producer.produce(settings.control_topic, value, key, headers=headers)
    if producer.flush(30):
        raise RuntimeError("the control message was not delivered")


def _minus(a: float | None, *b: float | None) -> float | None:
    return None if a is None or any(v is None for v in b) else a - sum(b)


def run_ours(
    client,
    msg,
    model_ids: list[int],
    epochs: int,
    batch_size: int,
    gpu_fraction: float = 0.0,
    timeout_s: float = 1800.0,
) -> list[dict[str, Any]]:
    """Deploy ``model_ids`` as one configuration, announce the stream, and follow the store
    until every result is finished; one dict of times and accuracies per result."""
    config = client.create_configuration(f"bench-{uuid.uuid4().hex[:8]}", model_ids)
    dep = client.deploy_training(
        config.id, batch_size=batch_size, kwargs=f"epochs={epochs}", gpu_fraction=gpu_fraction
    )
    announce(client.settings, msg, dep.id)
    start = time.perf_counter()
    marks: dict[tuple[int, str], float] = {}
    while True:
        d = client.get_deployment(dep.id)
        now = time.perf_counter() - start
        for r in d.results:
            phase = (r.progress or {}).get("phase")
            if phase:
                marks.setdefault((r.id, phase), now)
            if r.test_metrics:
                marks.setdefault((r.id, "results"), now)
            if r.done:
                marks.setdefault((r.id, "done"), now)
        if d.done:
            break
        if now > timeout_s:
            raise TimeoutError(f"deployment {dep.id} not done after {timeout_s:.0f}s")
        time.sleep(POLL_S)
    out = []
    for r in d.results:
        if r.status != "finished":
            raise RuntimeError(f"{r.model_name} {r.status}: {r.error}")

        def at(name: str, rid: int = r.id) -> float | None:
            return marks.get((rid, name))

        wall, train = at("done"), r.training_time_s
        out.append(
            {
                "model": r.model_name,
                "framework": r.framework,
                "datasource_id": d.datasource_id,
                "wall_s": wall,
                "training_time_s": train,
                "startup_s": wall - train,
                "phases_s": dict(r.phases),  # as the run stored them
                "test_accuracy": r.test_metrics.get("accuracy"),
                "val_accuracy": r.val_metrics.get("accuracy"),
                "epochs": len(r.history),
            }
        )
    return out


def ray_worker_threads() -> dict[str, Any]:
    """What a 1-CPU Ray worker (as a Ray Train worker is) gets: OMP_NUM_THREADS and torch's
    thread count."""
    import ray

    @ray.remote(num_cpus=1, max_calls=1)
    def threads() -> dict[str, Any]:
        import torch

        return {
            "OMP_NUM_THREADS": os.environ.get("OMP_NUM_THREADS"),
            "torch_threads": torch.get_num_threads(),
        }

    return ray.get(threads.remote())


def client_with_listener(settings: Settings):
    """A client, and the control listener started as `kafkaml-ray up` starts it."""
    from kafkaml_ray import Client
    from kafkaml_ray.ingest.listener import start_listener
    from kafkaml_ray.train.launch import on_datasource

    client = Client(settings)
    start_listener(settings, on_datasource)
    return client
