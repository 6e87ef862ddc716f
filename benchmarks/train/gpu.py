"""The GPU benchmark (``--gpu``): VGG-16 (PyTorch and Keras) trained by our runs on the CPU
and on a whole GPU, then four PyTorch VGG-16s in one configuration sharing one GPU at 0.25
each; digits tiled and blown up to 64x64."""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from benchmarks._common import digits, local_stack, machine_facts, produce_digits, settle
from benchmarks.train.models import RATES, VGG16_KERAS, VGG16_PYTORCH
from benchmarks.train.ours import PRODUCED_TOPIC, client_with_listener, ray_worker_threads, run_ours

__all__ = ["run_gpu", "nvidia_gpus"]


def _upsampled(n: int) -> tuple[np.ndarray, np.ndarray]:
    """Digits tiled to ``n`` samples, each 8x8 image blown up to 64x64."""
    x, y = digits(n)
    return np.kron(x, np.ones((8, 8), dtype=np.float32)), y


def nvidia_gpus() -> list[str]:
    """The GPUs as ``nvidia-smi`` names them (name, memory), or [] without it."""
    import subprocess

    try:
        out = subprocess.run(
            ["nvidia-smi", "--query-gpu=name,memory.total", "--format=csv,noheader"],
            capture_output=True,
            text=True,
            timeout=30,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return []
    return [line.strip() for line in out.splitlines() if line.strip()]


def run_gpu(samples: int, epochs: int, batch_size: int) -> dict[str, Any]:
    """GPU vs CPU for VGG-16 (PyTorch and Keras), then four PyTorch VGG-16s at 0.25 GPU."""
    import ray

    from kafkaml_ray.ingest.listener import stop_listener

    facts = machine_facts()
    facts["gpus"] = nvidia_gpus()
    x, y = _upsampled(samples)
    with local_stack(num_cpus=4) as settings:
        gpus = ray.cluster_resources().get("GPU", 0)
        if gpus < 1:
            raise SystemExit(f"--gpu needs a GPU in the Ray cluster; it has {gpus:g}")
        client = client_with_listener(settings)
        codes = {"pytorch": VGG16_PYTORCH, "tensorflow": VGG16_KERAS}
        ids = {fw: client.add_model(f"vgg16-{fw}", fw, code).id for fw, code in codes.items()}
        shared_ids = [ids["pytorch"]] + [
            client.add_model(f"vgg16-pytorch-{i}", "pytorch", VGG16_PYTORCH).id for i in (2, 3, 4)
        ]
        msg = produce_digits(
            settings,
            "vgg-64x64",
            x,
            y,
            1,
            validation_rate=RATES[0],
            test_rate=RATES[1],
            control_topic=PRODUCED_TOPIC,
        )
        run_ours(client, msg, [ids["pytorch"]], 1, batch_size, gpu_fraction=1.0)  # warm-up
        single = {}
        for fw in codes:
            settle()
            cpu = run_ours(client, msg, [ids[fw]], epochs, batch_size)[0]
            settle()
            gpu = run_ours(client, msg, [ids[fw]], epochs, batch_size, gpu_fraction=1.0)[0]
            single[fw] = {
                "cpu": cpu,
                "gpu": gpu,
                "speedup_training": cpu["training_time_s"] / gpu["training_time_s"],
                "speedup_wall": cpu["wall_s"] / gpu["wall_s"],
            }
        settle()
        shared = run_ours(client, msg, shared_ids, epochs, batch_size, gpu_fraction=0.25)
        stop_listener(settings)
        worker_threads = ray_worker_threads()
    shared_wall = max(r["wall_s"] for r in shared)
    alone = single["pytorch"]["gpu"]["wall_s"]
    facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return {
        "benchmark": "train_gpu",
        "data": f"digits tiled to {samples} samples, upsampled to 64x64; 80/10/10 split",
        "epochs": epochs,
        "batch_size": batch_size,
        "ray_gpus": gpus,
        "single": single,
        "shared_4_at_0.25": {
            "runs": shared,
            "wall_s": shared_wall,
            "one_alone_wall_s": alone,
            "speedup_vs_4_in_turn": 4 * alone / shared_wall,
        },
        "ray_worker_threads": worker_threads,
        "note": "one run each (device time is short); the CPU runs use the 1 CPU a Ray Train "
        "worker gets",
        "machine": facts,
    }
