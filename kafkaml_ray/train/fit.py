"""One model's training on one worker: its framework's loop (`kafkaml_ray.frameworks`),
then, on rank 0, the reporter saves the weights and evaluates the test set. Runs in Ray
Train workers and Tune trials, never in the caller's process."""

from __future__ import annotations

from typing import Any

from kafkaml_ray import frameworks
from kafkaml_ray.train.reporter import Reporter, RunSpec, after_training

__all__ = ["train"]


def train(
    spec: RunSpec,
    shards: dict[str, Any],
    *,
    rank: int = 0,
    distributed: bool = False,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train ``spec``'s model on one worker's ``shards`` (train/val/test data iterators).
    Rank 0 reports to the store (``reporter``: a Tune trial's) and returns the final
    metrics; other ranks return ``{}``."""
    reporter = reporter or Reporter(spec, enabled=rank == 0)
    adapter = frameworks.get(spec.framework)
    fitted = adapter.train(spec, shards, reporter, rank, distributed)
    if fitted is None:
        return {}
    return after_training(reporter, spec, fitted, adapter.weights_name)
