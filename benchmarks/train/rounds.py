"""The run: one broker and Ray head, the digits streams, a warm-up of each pipeline, then
``repeat`` rounds of plain (a fresh process, and a warm one) and ours on 1 and 4
partitions, alternating their order; the plain runs go to spawned processes, one
framework to a process; then ``repeat`` 4-trial Ray Tune searches per framework."""

from __future__ import annotations

import multiprocessing
import os
import time
import uuid
from concurrent.futures import ProcessPoolExecutor
from typing import Any

from benchmarks._common import digits, local_stack, machine_facts, produce_digits, settle
from benchmarks.train.models import FRAMEWORKS, PARTITIONS, PLAIN, RATES, split
from benchmarks.train.ours import PRODUCED_TOPIC, client_with_listener, ray_worker_threads, run_ours
from benchmarks.train.report import results
from benchmarks.train.search import run_search

__all__ = ["run"]


def _pool() -> ProcessPoolExecutor:
    """A process of its own (spawned) for plain training."""
    return ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))


def run(epochs: int, batch_size: int, repeat: int) -> dict[str, Any]:
    """The run, ``epochs`` and ``batch_size`` for every training; its results as
    ``train.json`` holds them."""
    import ray

    from kafkaml_ray.demo import EXAMPLES, EXAMPLES_DIR, register_examples
    from kafkaml_ray.ingest.listener import stop_listener

    facts = machine_facts()
    x, y = digits()
    data = split(x, y)
    codes = {fw: (EXAMPLES_DIR / EXAMPLES[name][1]).read_text() for fw, name in FRAMEWORKS.items()}
    pools = {fw: _pool() for fw in FRAMEWORKS}
    ours: dict[tuple[str, int], list[dict]] = {(fw, p): [] for fw in FRAMEWORKS for p in PARTITIONS}
    plain: dict[str, list[dict]] = {fw: [] for fw in FRAMEWORKS}
    warm: dict[str, list[dict]] = {fw: [] for fw in FRAMEWORKS}
    searches: dict[str, list[dict]] = {fw: [] for fw in FRAMEWORKS}
    try:
        started = time.perf_counter()
        with local_stack(num_cpus=4) as settings:
            cluster_start_s = time.perf_counter() - started
            gpus = ray.cluster_resources().get("GPU", 0)
            worker_threads = ray_worker_threads()
            client = client_with_listener(settings)
            ids = register_examples(client, list(FRAMEWORKS.values()))
            streams = {
                p: produce_digits(
                    settings,
                    f"digits-{p}p-{uuid.uuid4().hex[:6]}",
                    x,
                    y,
                    p,
                    validation_rate=RATES[0],
                    test_rate=RATES[1],
                    control_topic=PRODUCED_TOPIC,
                )
                for p in PARTITIONS
            }
            # Warm-up: one epoch each way (imports, file caches, first worker processes).
            for fw, name in FRAMEWORKS.items():
                pools[fw].submit(PLAIN[fw], codes[fw], data, 1, batch_size).result()
                run_ours(client, streams[1], [ids[name]], 1, batch_size)
            for i in range(repeat):
                for fw, name in FRAMEWORKS.items():
                    steps = ["plain", "warm", *PARTITIONS]
                    for step in steps if i % 2 == 0 else steps[::-1]:
                        settle()
                        if step == "plain":  # a fresh process, as a Ray Train worker is
                            with _pool() as fresh:
                                job = fresh.submit(PLAIN[fw], codes[fw], data, epochs, batch_size)
                                plain[fw].append(job.result())
                        elif step == "warm":
                            job = pools[fw].submit(PLAIN[fw], codes[fw], data, epochs, batch_size)
                            warm[fw].append(job.result())
                        else:
                            got = run_ours(client, streams[step], [ids[name]], epochs, batch_size)
                            ours[(fw, step)] += got
            # A 4-trial Ray Tune search per framework on the 1-partition stream's datasource.
            for _ in range(repeat):
                for fw, name in FRAMEWORKS.items():
                    settle()
                    stored = ours[(fw, 1)][0]["datasource_id"]
                    searches[fw].append(run_search(client, ids[name], stored, epochs, batch_size))
            stop_listener(settings)
    finally:
        for pool in pools.values():
            pool.shutdown()
    facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return results(
        ours,
        plain,
        warm,
        searches,
        epochs,
        batch_size,
        repeat,
        cluster_start_s,
        gpus,
        worker_threads,
        facts,
    )
