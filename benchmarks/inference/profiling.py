"""Profiling our pipeline: the Predictor's Serve handle round trip, and py-spy samples of
the ingress and the predictor replicas while a backlog drains, read into shares by
function."""

from __future__ import annotations

import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.inference.measure import throughput
from benchmarks.inference.pipelines import Pipeline

__all__ = ["profile_ours"]


def _pyspy() -> str | None:
    exe = Path(sys.executable).parent / "py-spy"
    return str(exe) if exe.exists() else None


def _collapsed(path: Path) -> list[tuple[list[str], int]]:
    out = []
    for line in path.read_text().splitlines():
        stack, _, count = line.rpartition(" ")
        if stack and count.isdigit():
            out.append(([_frame(f) for f in stack.split(";")], int(count)))
    return out


def _frame(frame: str) -> str:
    """``"func (path/file.py:12)"`` -> ``"func (file.py)"``."""
    func, _, where = frame.partition(" (")
    return f"{func} ({where.rsplit(':', 1)[0].rsplit('/', 1)[-1].rstrip(')')})"


def _is(frame: str, name: str) -> bool:
    """``"KafkaIngress._run (app.py)"`` is ``"_run (app.py)"``."""
    return frame == name or frame.endswith("." + name)


def _below(stacks: list[tuple[list[str], int]], anchor: str) -> dict[str, float]:
    """Share of the samples through ``anchor`` by the function called right below it
    (``(self)`` when the sample is in ``anchor`` itself)."""
    shares: Counter = Counter()
    for frames, count in stacks:
        hits = [i for i, f in enumerate(frames) if _is(f, anchor)]
        if hits:
            i = hits[-1]
            shares[frames[i + 1] if i + 1 < len(frames) else "(self)"] += count
    total = sum(shares.values())
    return {k: v / total for k, v in shares.most_common(8)} if total else {}


def _leaves(stacks: list[tuple[list[str], int]]) -> dict[str, float]:
    """Share of the samples by the innermost Python function (time in C/C++ code, e.g. Ray's
    core worker, shows under the Python function that called it)."""
    shares: Counter = Counter()
    for frames, count in stacks:
        shares[frames[-1]] += count
    total = sum(shares.values())
    return {k: v / total for k, v in shares.most_common(10)} if total else {}


def profile_ours(p: Pipeline, x: np.ndarray, rate_hint: float, seconds: float) -> dict[str, Any]:
    """Serve handle round trips to the Predictor (1 and B samples), then py-spy on the
    ingress (every thread, idle included: wall time of its consume loop) and the predictor
    (CPU samples) while an extra backlog drains."""
    out: dict[str, Any] = {}
    b = p.info["batch_size"]
    for n in (1, b):
        chunk = np.asarray(x[:n], dtype=np.float32)
        p.handle.predict.remote(chunk).result()
        times = []
        for _ in range(30):
            t = time.perf_counter()
            p.handle.predict.remote(chunk).result()
            times.append(time.perf_counter() - t)
        out[f"handle_round_trip_ms_{n}"] = 1000 * statistics.median(times)
    exe = _pyspy()
    if exe is None or not p.pids.get("KafkaIngress") or not p.pids.get("Predictor"):
        out["pyspy"] = "py-spy or the replica processes not found"
        return out
    tmp = Path(tempfile.mkdtemp(prefix="kmlb-spy-"))
    procs = {}
    for role, idle in (("KafkaIngress", True), ("Predictor", False)):
        cmd = [exe, "record", "--pid", str(p.pids[role][0]), "--duration", str(int(seconds))]
        cmd += ["--rate", "200", "--format", "raw", "--nonblocking", "-o", str(tmp / role)]
        cmd += ["--idle"] if idle else []
        procs[role] = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    time.sleep(0.5)  # py-spy attached
    n = int(rate_hint * (seconds + 1))
    measured = throughput(p, x, n)
    for proc in procs.values():
        proc.wait(60)
    out["profiled_round"] = measured
    try:
        ingress = _collapsed(tmp / "KafkaIngress")
        predictor = _collapsed(tmp / "Predictor")
    except OSError as e:
        out["pyspy"] = f"no py-spy output: {e}"
        return out
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    out["ingress_loop_wall_share"] = _below(ingress, "_step (app.py)")
    out["ingress_submit_wall_share"] = _below(ingress, "_submit (app.py)")
    out["ingress_finish_wall_share"] = _below(ingress, "_finish (app.py)")
    cpu = sum(c for _, c in predictor)
    in_model = sum(c for f, c in predictor if any(_is(x, "predict (trained.py)") for x in f))
    out["predictor_cpu_samples"] = cpu
    # Under 0.2 s of CPU the Predictor only ran Serve's housekeeping: it was not predicting.
    out["predictor_cpu_share_in_model"] = in_model / cpu if cpu >= 0.2 * 200 else None
    out["predictor_cpu_leaves"] = _leaves(predictor)
    out["pyspy_rate_hz"] = 200
    return out
