"""The training report: the results of a run with its aims judged (`results`), its Markdown
(`markdown`) and plot (`plot`), and the Markdown of the GPU benchmark (`markdown_gpu`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import summary
from benchmarks._report import figure, median_range, met, shared_machine, table, versions
from benchmarks.train.models import FRAMEWORKS, PARTITIONS
from benchmarks.train.ours import POLL_S
from benchmarks.train.search import CONCURRENT, TRIALS

__all__ = ["results", "markdown", "plot", "markdown_gpu", "LABELS"]

LABELS = {"pytorch": "PyTorch", "tensorflow": "TensorFlow/Keras"}
AIM_RATIO = 1.1
AIM_WALL = 1.3
AIM_SEARCH = 1.5
NO_GPU = (
    "no GPU was lent to the session that made these results (the device tool said 'not "
    "drawn'); run `python -m benchmarks.train --gpu` on a machine with one"
)


def _med(runs: list[dict], key: str) -> float:
    return summary([r[key] for r in runs])["median"]


def results(
    ours, plain, warm, searches, epochs, batch_size, repeat, cluster_start_s, gpus, threads, facts
):
    """The run's results as ``train.json`` holds them: per framework the overhead against
    plain code, the 4-trial search against 4 plain runs in a row, the paper's comparisons,
    the aims judged, every run."""
    comparison = {}
    for fw in FRAMEWORKS:
        runs = ours[(fw, 1)]
        plain_s = summary([r["seconds"] for r in plain[fw]])
        warm_s = summary([r["seconds"] for r in warm[fw]])
        train_s = summary([r["training_time_s"] for r in runs])
        wall_s = summary([r["wall_s"] for r in runs])
        comparison[fw] = {
            "plain_s": plain_s,
            "plain_warm_s": warm_s,
            "ours_training_time_s": train_s,
            "ours_wall_s": wall_s,
            "startup_s": summary([r["startup_s"] for r in runs]),
            "phases_s": {
                k: summary([r["phases_s"][k] for r in runs if k in r["phases_s"]])
                for k in runs[0]["phases_s"]
            },
            "ratio": train_s["median"] / plain_s["median"],
            "ratio_vs_warm": train_s["median"] / warm_s["median"],
            "ratio_wall": wall_s["median"] / plain_s["median"],
            "plain_test_accuracy": _med(plain[fw], "test_accuracy"),
            "plain_threads": plain[fw][0]["threads"],
        }
    paper = [
        {
            "framework": fw,
            "partitions": p,
            "wall_s": _med(ours[(fw, p)], "wall_s"),
            "training_time_s": _med(ours[(fw, p)], "training_time_s"),
            "startup_s": _med(ours[(fw, p)], "startup_s"),
            "test_accuracy": _med(ours[(fw, p)], "test_accuracy"),
            "val_accuracy": _med(ours[(fw, p)], "val_accuracy"),
        }
        for fw in FRAMEWORKS
        for p in PARTITIONS
    ]
    search = {}
    for fw in FRAMEWORKS:
        wall = summary([r["wall_s"] for r in searches[fw]])
        in_a_row = TRIALS * comparison[fw]["plain_s"]["median"]
        search[fw] = {
            "wall_s": wall,
            "plain_in_a_row_s": in_a_row,
            "ratio": wall["median"] / in_a_row,
            "best_test_accuracy": _med(searches[fw], "best_test_accuracy"),
        }
    torch_ratio = comparison["pytorch"]["ratio"]
    keras_ratio = comparison["tensorflow"]["ratio"]
    return {
        "benchmark": "train",
        "data": "digits: 1,797 float32 8x8 images, 80/10/10 ordered split",
        "models": FRAMEWORKS,
        "epochs": epochs,
        "batch_size": batch_size,
        "repeat": repeat,
        "torch_ratio": torch_ratio,
        "keras_ratio": keras_ratio,
        "torch_ratio_vs_warm": comparison["pytorch"]["ratio_vs_warm"],
        "keras_ratio_vs_warm": comparison["tensorflow"]["ratio_vs_warm"],
        "torch_ratio_wall": comparison["pytorch"]["ratio_wall"],
        "keras_ratio_wall": comparison["tensorflow"]["ratio_wall"],
        "startup_s": {fw: comparison[fw]["startup_s"]["median"] for fw in FRAMEWORKS},
        "cluster_start_s": cluster_start_s,
        "aims": {
            # Our timed runs train in a process the training pool kept warm: against the
            # warm plain process, like for like (the fresh-process ratio is lower still).
            f"torch_ratio_vs_warm_at_most_{AIM_RATIO}": (
                comparison["pytorch"]["ratio_vs_warm"] <= AIM_RATIO
            ),
            f"keras_ratio_vs_warm_at_most_{AIM_RATIO}": (
                comparison["tensorflow"]["ratio_vs_warm"] <= AIM_RATIO
            ),
            f"torch_wall_ratio_at_most_{AIM_WALL}": comparison["pytorch"]["ratio_wall"] <= AIM_WALL,
            f"keras_wall_ratio_at_most_{AIM_WALL}": (
                comparison["tensorflow"]["ratio_wall"] <= AIM_WALL
            ),
            **{
                f"{fw}_search_ratio_at_most_{AIM_SEARCH}": search[fw]["ratio"] <= AIM_SEARCH
                for fw in FRAMEWORKS
            },
        },
        "search": search,
        "search_runs": searches,
        "overhead": comparison,
        "paper_comparison": paper,
        "runs": {f"{fw}-{p}p": ours[(fw, p)] for fw in FRAMEWORKS for p in PARTITIONS},
        "plain_runs": plain,
        "plain_warm_runs": warm,
        "ray_worker_threads": threads,
        "gpu": {"lent": gpus > 0, "ray_gpus": gpus, "note": None if gpus else NO_GPU},
        "timed": {
            "ours_training_time_s": "stored by the run: in the Ray Train worker, from the data "
            "shards to arrays to the end of the last epoch (validation and store writes in)",
            "ours_wall_s": "control message acknowledged -> result finished (store polled)",
            "startup_s": "wall_s - training_time_s",
            "plain": "build_model -> end of the last epoch, in-memory arrays, a fresh process "
            "per run (framework imported before the timing)",
            "ours_process": "the training pool's warm process of the framework (the warm-up "
            "run started it)",
            "plain_warm": "the same in a process that already ran a 1-epoch warm-up",
            "search": f"Client.tune of {TRIALS} trials (seeds), {CONCURRENT} at a time -> "
            "the search done (store polled); against plain (fresh process) x "
            f"{TRIALS}",
        },
        "machine": facts,
    }


def markdown(r: dict[str, Any]) -> str:
    """``train.md``: the overhead table, the paper's comparisons, the GPU note, the noise."""
    rows = []
    for fw, c in r["overhead"].items():
        rows.append(
            [
                LABELS[fw],
                median_range(c["plain_s"], 2, grouped=False),
                median_range(c["ours_training_time_s"], 2, grouped=False),
                f"**{c['ratio']:.2f}**",
                median_range(c["plain_warm_s"], 2, grouped=False),
                f"{c['ratio_vs_warm']:.2f}",
                median_range(c["ours_wall_s"], 2, grouped=False),
                f"**{c['ratio_wall']:.2f}**",
                f"{c['startup_s']['median']:.1f}",
            ]
        )
    names = list(dict.fromkeys(k for c in r["overhead"].values() for k in c["phases_s"]))
    phase_rows = [
        [name]
        + [
            median_range(c["phases_s"][name], 2, grouped=False) if name in c["phases_s"] else "-"
            for c in r["overhead"].values()
        ]
        for name in names
    ]
    paper = [
        [
            LABELS[p["framework"]],
            p["partitions"],
            f"{p['wall_s']:.1f}",
            f"{p['training_time_s']:.2f}",
            f"{p['startup_s']:.1f}",
            f"{p['test_accuracy']:.3f}",
            f"{p['val_accuracy']:.3f}",
        ]
        for p in r["paper_comparison"]
    ]
    plain_acc = ", ".join(
        f"{LABELS[fw]} {c['plain_test_accuracy']:.3f}" for fw, c in r["overhead"].items()
    )
    spreads = [
        c[k]["spread"]
        for c in r["overhead"].values()
        for k in ("plain_s", "plain_warm_s", "ours_training_time_s", "ours_wall_s")
    ]
    m, aims = r["machine"], r["aims"]
    verdict = "; ".join(f"`{k}`: {met(v)}" for k, v in aims.items())
    threads = r["ray_worker_threads"]
    gpu = r["gpu"]["note"] or f"{r['gpu']['ray_gpus']:g} GPU(s) in Ray: see train_gpu.md"
    overhead_table = table(
        "framework | plain s (fresh process) | ours training_time_s | ratio | plain s (warm "
        "process) | ratio vs warm | ours wall s | wall_ratio | startup_s",
        "lrrrrrrrr",
        rows,
    )
    phase_table = table(
        "phase (as the run stores it) | " + " | ".join(LABELS[fw] for fw in r["overhead"]),
        "l" + "r" * len(r["overhead"]),
        phase_rows,
    )
    search_rows = [
        [
            LABELS[fw],
            median_range(c["wall_s"], 1, grouped=False),
            f"{c['plain_in_a_row_s']:.1f}",
            f"**{c['ratio']:.2f}**",
            f"{c['best_test_accuracy']:.3f}",
        ]
        for fw, c in r["search"].items()
    ]
    search_table = table(
        f"framework | search of {TRIALS} trials, wall s | {TRIALS} plain runs in a row, s | "
        "ratio | best trial's test accuracy",
        "lrrrr",
        search_rows,
    )
    paper_table = table(
        "framework | partitions | wall s | training_time_s | startup_s | test accuracy | "
        "val accuracy",
        "lrrrrrr",
        paper,
    )
    return f"""# Training: ours vs plain PyTorch / Keras, and the paper's comparisons

Digits (1,797 samples, 80/10/10 split), the example CNNs, {r["epochs"]} epochs, batch size \
{r["batch_size"]}, validation every epoch; median (min-max) of {r["repeat"]} runs after one \
1-epoch warm-up of each pipeline; seconds.

## (a) Overhead against plain code, same in-memory data (1-partition stream)

{overhead_table}

- `torch_ratio_vs_warm` {r["torch_ratio_vs_warm"]:.2f}, `keras_ratio_vs_warm` \
{r["keras_ratio_vs_warm"]:.2f} (aim <= {AIM_RATIO}; `wall_ratio`, control message to \
finished over plain code in a fresh process, aim <= {AIM_WALL}): {verdict}. On wall time: \
{r["torch_ratio_wall"]:.1f}x and {r["keras_ratio_wall"]:.1f}x.
- **ours training_time_s** is stored by the run and measured in the Ray Train worker: \
data shards to arrays, model build, every epoch with validation (Ignite metrics for PyTorch) \
and the per-epoch store writes. **wall** runs from the control message's acknowledgement to \
the finished result (store polled every {POLL_S} s); **startup_s** = wall - training_time_s \
(broken down below by the phases the run stores with its result). **plain** = `build_model` of the \
same code, then a plain loop / `fit`, from the build to the last epoch, each timed run in a \
fresh process (the framework imported before the timing). **plain (warm process)**: the \
same in a process that already trained. Our timed runs train in a process that the \
training pool (`kafkaml_ray.train.pool`) kept warm from the warm-up run, so the \
like-for-like ratio is against the warm plain process (`torch_ratio` \
{r["torch_ratio"]:.2f}, `keras_ratio` {r["keras_ratio"]:.2f} against the fresh one). A \
framework's first run on a cluster also starts that process and imports the framework \
(imports about 3 s for PyTorch, 4 s for TensorFlow here). Cluster start (broker + Ray head, once): \
{r["cluster_start_s"]:.1f} s.
- Threads: a Ray Train worker (1 CPU) gets OMP_NUM_THREADS={threads["OMP_NUM_THREADS"]}, \
torch threads {threads["torch_threads"]}; plain PyTorch used \
{r["overhead"]["pytorch"]["plain_threads"]} threads, plain TensorFlow intra-op threads \
{r["overhead"]["tensorflow"]["plain_threads"]}.

### Where the time goes: seconds by phase, from the control message to finished

{phase_table}

Each phase begins at a mark the run records (`kafkaml_ray.schemas.PHASES`); `result show` \
and the panel's Results page show them for any result.

### A Ray Tune search against plain code run as many times in a row

{search_table}

`Client.tune` with {TRIALS} trials that differ only in their seed (same epochs and batch \
size), {CONCURRENT} at a time (one CPU each), from the call to the search done, best trial \
marked; against {TRIALS} x the plain fresh-process time above (aim <= {AIM_SEARCH}).

## (b) The paper's comparisons, small scale: PyTorch vs TensorFlow, 1 vs 4 partitions

{paper_table}

Plain test accuracy on the same split: {plain_acc}. One Ray Train worker per model; the \
partitions change how the stream is read (one read task per partition) and the ordered \
split (timestamp, partition, offset). Plot: `train.png`.

## (c) GPU

{gpu}. `--gpu` measures GPU vs CPU training of a VGG-16-size model on 64x64 inputs and four \
models sharing one GPU at 0.25 each.

## Noise

The {shared_machine(m)}; repeat spread (max-min)/median \
{min(spreads):.0%}-{max(spreads):.0%}. {versions(m, "ray", "torch", "tensorflow", "keras")}.

`python -m benchmarks.train --epochs {r["epochs"]} --repeat {r["repeat"]}`
"""


def plot(r: dict[str, Any], path: Path) -> None:
    """``train.png``: training time (with start-up and plain) and test accuracy per
    framework and partition count."""
    rows = r["paper_comparison"]
    names = [f"{LABELS[p['framework']].split('/')[0]}\n{p['partitions']} part." for p in rows]
    xs = np.arange(len(rows))
    with figure(path, (10, 3.8), 2) as (ax1, ax2):
        train = [p["training_time_s"] for p in rows]
        ax1.bar(xs, train, 0.6, color="tab:blue", label="training_time_s")
        ax1.bar(
            xs,
            [p["startup_s"] for p in rows],
            0.6,
            bottom=train,
            color="tab:orange",
            alpha=0.6,
            label="startup_s (wall - training)",
        )
        for i, p in enumerate(rows):
            if p["partitions"] == 1:
                plain_s = r["overhead"][p["framework"]]["plain_s"]["median"]
                ax1.plot([i - 0.3, i + 0.3], [plain_s, plain_s], color="black", lw=2)
        ax1.plot([], [], color="black", lw=2, label="plain loop / fit")
        ax1.set_xticks(xs, names)
        ax1.set_ylabel("seconds (median)")
        ax1.set_title(f"Training time, {r['epochs']} epochs")
        ax1.legend(fontsize=8)
        ax2.bar(xs, [p["test_accuracy"] for p in rows], 0.6, color="tab:green")
        ax2.set_xticks(xs, names)
        ax2.set_ylim(0.8, 1.0)
        ax2.set_ylabel("test accuracy")
        ax2.set_title("Accuracy (test set, newest 10%)")


def markdown_gpu(r: dict[str, Any]) -> str:
    """``train_gpu.md``: GPU against CPU per framework, and four models sharing one GPU."""
    rows = [
        [
            LABELS[fw],
            f"{s['cpu']['training_time_s']:.1f}",
            f"{s['gpu']['training_time_s']:.1f}",
            f"**{s['speedup_training']:.1f}x**",
            f"{s['cpu']['wall_s']:.1f}",
            f"{s['gpu']['wall_s']:.1f}",
            f"{s['speedup_wall']:.1f}x",
        ]
        for fw, s in r["single"].items()
    ]
    header = (
        "framework | CPU training_time_s | GPU training_time_s | speed-up | CPU wall s | "
        "GPU wall s | wall speed-up"
    )
    sh = r["shared_4_at_0.25"]
    threads = r["ray_worker_threads"]
    return f"""# Training on a GPU: VGG-16 size, 64x64 inputs

{r["data"]}, {r["epochs"]} epochs, batch size {r["batch_size"]}; one run each after a \
1-epoch GPU warm-up; seconds. {r["ray_gpus"]:g} GPU(s) in Ray: \
{", ".join(r["machine"]["gpus"]) or "?"}; host: {r["machine"]["cores"]} cores, \
{r["machine"]["cpu"]}.

{table(header, "lrrrrrr", rows)}

Four PyTorch VGG-16s in one configuration at `gpu_fraction=0.25`: all done in \
{sh["wall_s"]:.1f} s; one alone on the whole GPU took {sh["one_alone_wall_s"]:.1f} s, so \
sharing is **{sh["speedup_vs_4_in_turn"]:.2f}x** faster than training the four in turn.

The CPU runs train in a 1-CPU Ray Train worker (OMP_NUM_THREADS=\
{threads["OMP_NUM_THREADS"]}, torch threads {threads["torch_threads"]}), as the library \
schedules them. Times as in `train.md`.
"""
