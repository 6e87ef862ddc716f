"""The run: per model, all its pipelines started together and every measurement round taken
in turn over them, rotating the order; the request grid at more replicas; `run`, which
trains the models on a private broker and Ray head and returns the results."""

from __future__ import annotations

import os
import time
from collections import defaultdict
from typing import Any

import numpy as np

from benchmarks._common import local_stack, machine_facts, settle, summary
from benchmarks.inference.measure import (
    at_load,
    idle_cores,
    p50_difference,
    pooled,
    request_grid,
    throughput,
    warm_up,
)
from benchmarks.inference.pipelines import (
    GPU_VARIANT,
    HEADLINE,
    MODELS,
    SIDES,
    VARIANTS,
    ModelCase,
    Pipeline,
    Plan,
    Trained,
    log,
    start_pipeline,
    train_models,
)
from benchmarks.inference.profiling import profile_ours
from benchmarks.inference.report import results
from kafkaml_ray.settings import Settings

__all__ = ["run", "measure_model", "request_grid_at"]


def _rotated(keys: list[str], i: int) -> list[str]:
    """``keys`` starting at position ``i`` (so every pipeline takes every turn)."""
    i %= len(keys)
    return keys[i:] + keys[:i]


def _check(case: ModelCase, wu: dict[str, Any], y: np.ndarray) -> dict[str, Any]:
    if wu["predictions"] is None:
        return {}
    preds, truth = wu["predictions"], y[wu["index"]]
    if case.classifier:
        out = {"warmup_accuracy": float((preds.argmax(1) == truth).mean())}
    else:
        out = {"warmup_mae": float(np.abs(preds[:, 0] - truth).mean())}
    return {**out, "_predictions": preds}


def measure_model(
    settings: Settings,
    client: Any,
    case: ModelCase,
    trained: Trained,
    plan: Plan,
    variants: bool,
    grid: dict[str, dict[str, Any]],
    gpu: bool = False,
) -> dict[str, Any]:
    """Start ours, the baseline and echo (and, for the headline model, the variants) at
    once, each on its own topics, then take every measurement round in turn over them,
    rotating the order, so that a change in the machine's load falls on every pipeline."""
    import ray

    x, y = case.data(max(plan.warmup, 4096))
    specs = [(s, s, {}, True) for s in SIDES]
    if case.name == HEADLINE and variants:
        specs += list(VARIANTS)
    if case.name == HEADLINE and gpu:
        specs.append(GPU_VARIANT)
    pipes: dict[str, Pipeline] = {}
    res: dict[str, dict[str, Any]] = {}
    try:
        for key, side, options, _ in specs:
            settle(max_s=5)
            opts = {"batch_size": plan.batch_size, **options}
            pipes[key] = start_pipeline(side, settings, client, case, trained, 1, **opts)
            wu = warm_up(pipes[key], x, plan.warmup)
            res[key] = {
                "side": side,
                "settings": options,
                "start_s": pipes[key].start_s,
                "warmup_s": wu["seconds"],
                "pids": pipes[key].pids,
                **pipes[key].info,
                **_check(case, wu, y),
                "rounds": [],
                "loads": {},
            }
            log(f"{case.name}/{key}: started in {pipes[key].start_s:.1f}s")
        keys = list(pipes)
        settle(max_s=5)
        idle = idle_cores(pipes)
        sizes = {}
        for key in keys:  # untimed: sizes each pipeline's rounds to about round_s seconds
            first = throughput(pipes[key], x, plan.backlog)
            rate = first["msgs_per_s"] * plan.round_s
            sizes[key] = int(min(max(rate, plan.backlog), 40 * plan.backlog))
            res[key]["sizing_round"] = first
        for i in range(plan.repeat):
            for key in _rotated(keys, i):
                res[key]["rounds"].append(throughput(pipes[key], x, sizes[key]))
        for key in keys:
            rates = summary([r["msgs_per_s"] for r in res[key]["rounds"]])
            res[key]["msgs_per_s"], res[key]["msgs_per_s_summary"] = rates["median"], rates
            log(f"{case.name}/{key}: {rates['median']:,.0f} msgs/s")
        for j, rate in enumerate(plan.loads):
            order = [k for k, _, _, light in specs if k in SIDES or (j == 0 and light)]
            rounds: dict[str, list] = defaultdict(list)
            # The light load, where the aim is a tie-break of tenths of a millisecond, gets
            # twice the rounds.
            for k in range(plan.load_rounds * (2 if j == 0 else 1)):
                for key in _rotated(order, j + k):  # interleaved: load changes hit every side
                    rounds[key].append(at_load(pipes[key], x, rate, plan.load_s))
            diff = p50_difference(rounds["ours"], rounds["baseline"])  # (before pooled())
            for key, got in rounds.items():
                res[key]["loads"][str(rate)] = pooled(got)
            res["ours"]["loads"][str(rate)]["p50_diff_vs_baseline"] = diff
        if case.name == HEADLINE:
            for j, c in enumerate(plan.clients):
                for side in _rotated(["ours", "baseline"], j):
                    grid[side][f"1x{c}"] = request_grid(pipes[side], x, c, plan.requests)
                    log(f"{side} r=1 c={c}: {grid[side][f'1x{c}']['avg_ms']:.0f} ms")
            res["ours"]["profile"] = profile_ours(
                pipes["ours"], x, res["ours"]["msgs_per_s"], plan.profile_s
            )
        worker = pipes["baseline"].handle[0]
        res["baseline"]["model_predict_ms"] = {
            str(n): 1000 * ray.get(worker.time_predict.remote(n, 50)) for n in (1, plan.batch_size)
        }
    finally:
        for key, p in pipes.items():
            res.setdefault(key, {})["stopped"] = p.stop()
    sides = {s: res.pop(s) for s in SIDES}
    return {"sides": sides, "variants": res, "idle_cores_all_pipelines": idle}


def request_grid_at(
    settings: Settings, client: Any, trained: Trained, plan: Plan, replicas: int, grid: dict
) -> None:
    """The grid's cells at ``replicas`` = partitions (> 1): ours and the baseline started
    together, taking turns."""
    case = MODELS[HEADLINE]
    x, _ = case.data(4096)
    pipes = {}
    try:
        for side in ("ours", "baseline"):
            settle(max_s=5)
            pipes[side] = start_pipeline(
                side, settings, client, case, trained, replicas, plan.batch_size
            )
            warm_up(pipes[side], x, plan.warmup)
        for j, c in enumerate(plan.clients):
            for side in _rotated(["ours", "baseline"], j):
                grid[side][f"{replicas}x{c}"] = request_grid(pipes[side], x, c, plan.requests)
                log(f"{side} r={replicas} c={c}: {grid[side][f'{replicas}x{c}']['avg_ms']:.0f} ms")
    finally:
        for p in pipes.values():
            p.stop()


def run(plan: Plan, variants: bool = True, gpu: bool = False) -> dict[str, Any]:
    """The whole benchmark; ``gpu`` adds ours with a GPU predictor (`GPU_VARIANT`)."""
    facts = machine_facts()
    started = time.perf_counter()
    per: dict[str, dict[str, Any]] = {}
    grid: dict[str, dict[str, dict[str, Any]]] = {"ours": {}, "baseline": {}}
    with local_stack(num_cpus=8) as settings:
        import ray

        facts["ray_gpus"] = ray.cluster_resources().get("GPU", 0)
        startup_s = time.perf_counter() - started
        client, trained = train_models(settings, plan.epochs)
        log(f"trained: { {k: v.test_metrics for k, v in trained.items()} }")
        for name, case in MODELS.items():
            per[name] = measure_model(
                settings, client, case, trained[name], plan, variants, grid, gpu
            )
        for r in plan.replicas[1:]:
            request_grid_at(settings, client, trained[HEADLINE], plan, r, grid)
    facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return results(plan, per, grid, trained, startup_s, facts, time.perf_counter() - started)
