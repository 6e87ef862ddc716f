"""Training: our runs against a plain PyTorch loop and a plain Keras ``fit``; the paper's
comparisons at small scale; and (``--gpu``, where a GPU is lent) GPU against CPU.

One run, one embedded broker and Ray head. Data: scikit-learn's digits (1,797 float32 8x8
images, int64 labels), sent once by `RawSink` to a 1-partition and a 4-partition topic;
80/10/10 train/validation/test split; the example models ``digits-cnn-pytorch`` and
``digits-cnn-keras`` (registered, so validated, through `Client.add_model`).

**ours**: a deployment of one model (``batch_size``, ``epochs=E``); a control message naming
the stream's ranges goes to the control topic, read by the control listener (a detached
actor, as ``kafkaml-ray up`` starts it), which starts the deployment's runner: read the
ranges, split, one Ray Train run. Two times are taken:

- ``training_time_s``: stored by the run, measured in the Ray Train worker from turning its
  data shards into arrays to the end of ``fit``/the Ignite loop (model build, every epoch
  with its validation, the per-epoch metrics written to the store);
- ``wall_s``: from the control message's acknowledgement to the result being finished
  (this process polls the store every 0.1 s). ``startup_s = wall_s - training_time_s``:
  handing over (listener, runner actor), reading and splitting the stream, Ray Train's
  controller and worker start with its imports, the test evaluation, confusion matrix and
  weights saved after training, and the run's end.

**plain**: the same model code built by its framework adapter (``frameworks.get(...).build``),
then a plain PyTorch loop / a Keras
``fit`` on the same in-memory arrays: same epochs, batch size, shuffling and per-epoch
validation. Timed from building the model to the end of the last epoch (the framework is
imported before), in a fresh process each time, and in a warm process (one that already
ran a 1-epoch warm-up). Our timed runs train in the process the training pool kept warm
after the warm-up run (`kafkaml_ray.train.pool`), so the like-for-like ratio is against
the warm plain process.

``torch_ratio``/``keras_ratio`` = median ours ``training_time_s`` / median plain time (fresh
process), on the 1-partition stream; ``*_ratio_vs_warm`` use the warm plain time (the aims
judge these); ``wall_ratio`` = our wall time over the fresh plain time; cluster start-up
(broker, Ray head) is ``cluster_start_s``. A 4-trial Ray Tune search per framework is timed
against four plain fresh-process runs in a row (`search`).

    python -m benchmarks.train [--epochs 30] [--repeat 3] [--out benchmarks/results] [--quick]
    python -m benchmarks.train --gpu [--gpu-samples 512] [--epochs 2]   # needs a GPU

The parts: `models` (the example models, the split, the VGG-16 code, the plain baselines),
`ours` (one run of ours, followed through the store), `rounds` (the run), `gpu` (the GPU
benchmark), `report` (results, Markdown, plot).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from benchmarks._report import write_results
from benchmarks.train.gpu import run_gpu
from benchmarks.train.models import VGG16_KERAS, VGG16_PYTORCH, plain_keras, plain_torch
from benchmarks.train.ours import run_ours
from benchmarks.train.report import markdown, markdown_gpu, plot
from benchmarks.train.rounds import run

__all__ = [
    "main",
    "run",
    "run_gpu",
    "plain_torch",
    "plain_keras",
    "run_ours",
    "VGG16_PYTORCH",
    "VGG16_KERAS",
    "markdown",
    "markdown_gpu",
    "plot",
]


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.train", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--epochs", type=int, default=None, help="30 (--gpu: 2)")
    parser.add_argument("--batch-size", type=int, default=None, help="32 (--gpu: 64)")
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 3 epochs, 1 repeat")
    parser.add_argument("--gpu", action="store_true", help="GPU vs CPU (needs a GPU)")
    parser.add_argument("--gpu-samples", type=int, default=512)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.repeat, args.gpu_samples = 3 if not args.gpu else 1, 1, 64
    args.out.mkdir(parents=True, exist_ok=True)
    if args.gpu:
        result = run_gpu(args.gpu_samples, args.epochs or 2, args.batch_size or 64)
        write_results(args.out, "train_gpu", result, markdown_gpu)
        return
    result = run(args.epochs or 30, args.batch_size or 32, args.repeat)
    write_results(args.out, "train", result, markdown, plot)
