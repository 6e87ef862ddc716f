"""A Ray Tune search against plain code run as many times in a row (`run_search`): four
trials of the same model on the stored stream, differing only in their seed, as
``Client.tune`` starts them (one CPU each, two at a time on this 2-core machine), timed from
the call to the search being done (the store polled every `POLL_S` seconds)."""

from __future__ import annotations

import time
from typing import Any

from benchmarks.train.ours import POLL_S

__all__ = ["TRIALS", "CONCURRENT", "run_search"]

TRIALS = 4
CONCURRENT = 2


def run_search(
    client, model_id: int, datasource_id: int, epochs: int, batch_size: int
) -> dict[str, Any]:
    """One search of `TRIALS` trials (seeds 0..3, the same epochs and batch size as the plain
    runs); its wall time, each trial's training time and the best trial's accuracy."""
    space = {"epochs": epochs, "batch_size": batch_size, "seed": {"grid": list(range(TRIALS))}}
    start = time.perf_counter()
    run = client.tune(
        model_id,
        datasource_id,
        space,
        metric="val_accuracy",
        num_samples=1,
        max_concurrent_trials=CONCURRENT,
    )
    while not run.done:
        time.sleep(POLL_S)
        run = client.get_tune(run.id)
    wall = time.perf_counter() - start
    if run.status != "finished" or any(t.status != "finished" for t in run.trials):
        raise RuntimeError(f"search {run.id} {run.status}: {run.error}")
    best = next(t for t in run.trials if t.id == run.best_result_id)
    return {
        "wall_s": wall,
        "trials": len(run.trials),
        "trial_training_time_s": [t.training_time_s for t in run.trials],
        "best_test_accuracy": best.test_metrics.get("accuracy"),
    }
