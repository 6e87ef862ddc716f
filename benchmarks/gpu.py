"""Everything a GPU machine is lent for, in one command: ``python -m benchmarks.gpu``.

1. **Training** (what ``python -m benchmarks.train --gpu`` runs): VGG-16 in PyTorch and
   Keras trained by our runs on the CPU and on a whole GPU, then four PyTorch VGG-16s of one
   configuration sharing the GPU at 0.25 each against one of them alone.
2. **Inference with a GPU predictor** (the inference benchmark, ``--size small`` by
   default): ours with its Predictor on the GPU (``gpu_fraction=1``) beside ours on the CPU,
   Kafka-ML's loop and the echo ceiling, on the same broker, data and model.

Writes ``gpu.json``, ``gpu.md`` and ``gpu.png`` (the inference figures) to ``--out``. On a
machine without an NVIDIA GPU it says so, runs nothing and writes nothing (exit status 0),
so that one script can be tried anywhere and run as is where a GPU is lent:

    python -m benchmarks.gpu [--size small|quick|full] [--samples 512] [--out DIR]
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from benchmarks._common import log, machine_facts
from benchmarks._report import write_results

__all__ = ["main", "markdown"]

NO_GPU = (
    "no GPU: nvidia-smi lists none on this machine, so benchmarks.gpu ran nothing and "
    "wrote nothing; run it where an NVIDIA GPU and its driver are"
)


def markdown(r: dict[str, Any]) -> str:
    """The training report, then the inference report (each as its benchmark writes it)."""
    from benchmarks.inference import markdown as inference_markdown
    from benchmarks.train import markdown_gpu

    gpus = ", ".join(r["machine"]["gpus"])
    return (
        f"# GPU benchmarks ({gpus})\n\n`python -m benchmarks.gpu --size {r['size']}`\n\n"
        + markdown_gpu(r["train"]).replace("\n# ", "\n## ")
        + "\n\n"
        + inference_markdown(r["inference"]).replace("\n# ", "\n## ")
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.gpu", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size", choices=("quick", "small", "full"), default="small")
    parser.add_argument("--samples", type=int, default=512, help="VGG-16 training samples")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    from benchmarks.train.gpu import nvidia_gpus

    gpus = nvidia_gpus()
    if not gpus:
        print(NO_GPU)
        return 0
    from benchmarks.inference import SIZES, plot
    from benchmarks.inference import run as run_inference
    from benchmarks.train import run_gpu

    log(f"GPUs: {gpus}; 1/2 training")
    train = run_gpu(args.samples, args.epochs, args.batch_size)
    log("2/2 inference with a GPU predictor")
    inference = run_inference(SIZES[args.size], variants=False, gpu=True)
    result = {"size": args.size, "machine": {**machine_facts(), "gpus": gpus}}
    result |= {"train": train, "inference": inference}
    write_results(args.out, "gpu", result, markdown, lambda r, p: plot(r["inference"], p))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
