"""Memory: what the local stack holds idle, after a training, and per inference replica.

One run on a private stack (`local_stack`: the embedded broker and a Ray head), measured in
four states, each after the machine settles:

1. **idle**: the broker, the Ray head's processes and the control listener (as
   ``kafkaml-ray up`` leaves them, without the panel);
2. **after a training**: the same, once a digits CNN (PyTorch) has trained; the training
   pool keeps its process warm for the next run of that code;
3. **serving**: an inference of that result deployed, 1 replica (its Kafka ingress replica,
   which predicts, and the HTTP ``Predictor``) beside Serve's controller and proxy;
4. **after the inference is deleted**.

Every process that started with the stack is counted (found in ``/proc``: those that were
not there before it), grouped by what it is, with its resident set (RSS, shared pages
counted in every process) and its proportional set (PSS, shared pages divided among the
processes that map them, so the PSS of a group adds up). Linux only.

    python -m benchmarks.memory [--out benchmarks/results]

Writes ``memory.json``, ``memory.md`` and ``memory.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from benchmarks._common import digits, local_stack, log, machine_facts, settle, train_once
from benchmarks._report import figure, table, write_results

__all__ = ["main", "run", "markdown", "plot", "processes"]

MODEL = "digits-cnn-pytorch"
STATES = ("idle", "after a training", "serving", "after the inference is deleted")
#: The aim the issue sets: an idle stack under 1.5 GiB.
AIM_IDLE_MIB = 1536


def _read(path: str) -> str:
    try:
        with open(path, "rb") as f:
            return f.read().decode("utf-8", "replace")
    except OSError:  # gone meanwhile, or not ours to read
        return ""


def _kib(text: str, field: str) -> int:
    for line in text.splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    return 0


def _kind(cmdline: str, comm: str) -> str:
    """What a process of the stack is, from its command line."""
    if comm == "java":
        return "Kafka broker (JVM)"
    if cmdline.startswith("ray::"):
        name = cmdline.split()[0].removeprefix("ray::")
        for part, kind in (
            ("KafkaIngress", "inference: ingress replica"),
            ("Predictor", "inference: Predictor replica"),
            ("ServeController", "Ray Serve: controller and proxy"),
            ("ProxyActor", "Ray Serve: controller and proxy"),
            ("Listener", "control listener"),
            ("Agent", "Ray head (GCS, raylet, dashboard, agents)"),
            ("_AutoscalingCoordinatorActor", "Ray Data's actors (from the first read)"),
            ("_StatsActor", "Ray Data's actors (from the first read)"),
            ("_Pool", "training pool: its actor"),
            ("_Validator", "model-code validator (exits after 10 min idle)"),
        ):
            if part in name:
                return kind
        return "Ray workers: warm (IDLE) or running tasks"
    for part in ("gcs_server", "raylet", "dashboard", "log_monitor", "monitor.py", "agent"):
        if part in cmdline:
            return "Ray head (GCS, raylet, dashboard, agents)"
    return "other"


def processes(exclude: set[int]) -> list[dict[str, Any]]:
    """Every process not in ``exclude`` (and not this one): pid, kind, RSS and PSS (KiB)."""
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit() or int(entry) in exclude or int(entry) == os.getpid():
            continue
        cmdline = _read(f"/proc/{entry}/cmdline").replace("\0", " ").strip()
        if not cmdline:  # a kernel thread, or gone
            continue
        comm = _read(f"/proc/{entry}/comm").strip()
        rss = _kib(_read(f"/proc/{entry}/status"), "VmRSS")
        pss = _kib(_read(f"/proc/{entry}/smaps_rollup"), "Pss")
        kind = _kind(cmdline, comm)
        name = cmdline.split()[0][:60]
        out.append({"pid": int(entry), "name": name, "kind": kind, "rss_kib": rss, "pss_kib": pss})
    return out


def _state(exclude: set[int]) -> dict[str, Any]:
    procs = processes(exclude)
    groups: dict[str, dict[str, float]] = defaultdict(lambda: {"n": 0, "rss": 0.0, "pss": 0.0})
    for p in procs:
        g = groups[p["kind"]]
        g["n"] += 1
        g["rss"] += p["rss_kib"] / 1024
        g["pss"] += p["pss_kib"] / 1024
    return {
        "groups": dict(groups),
        "total_rss_mib": sum(g["rss"] for g in groups.values()),
        "total_pss_mib": sum(g["pss"] for g in groups.values()),
        "processes": procs,
    }


def run() -> dict[str, Any]:
    from kafkaml_ray import Client
    from kafkaml_ray.demo import register_examples
    from kafkaml_ray.ingest.listener import start_listener, stop_listener
    from kafkaml_ray.train.launch import on_datasource

    facts, started = machine_facts(), time.perf_counter()
    before = {int(e) for e in os.listdir("/proc") if e.isdigit()}
    states: dict[str, Any] = {}

    def measure(name: str) -> None:
        settle(max_s=20)
        time.sleep(2)
        states[name] = _state(before)
        log(f"{name}: {states[name]['total_pss_mib']:.0f} MiB PSS")

    with local_stack(num_cpus=4) as settings:
        client = Client(settings)
        start_listener(settings, on_datasource)
        measure("idle")
        config = client.create_configuration(
            "bench-memory", [register_examples(client, [MODEL])[MODEL]]
        )
        x, y = digits()
        result, topic, _ = train_once(client, config.id, x, y, 1, 32)
        measure("after a training")
        inf = client.deploy_inference(result.id, f"{topic}-in", f"{topic}-out")
        measure("serving")
        client.delete_inference(inf.id)
        measure("after the inference is deleted")
        stop_listener(settings)
    return {"model": MODEL, "states": states, "machine": facts,
            "seconds": time.perf_counter() - started}  # fmt: skip


def markdown(res: dict[str, Any]) -> str:
    states = res["states"]
    kinds = sorted({k for s in states.values() for k in s["groups"]})
    rows = []
    for k in kinds:
        cells = []
        for name in STATES:
            g = states[name]["groups"].get(k)
            cells.append(f"{g['pss']:.0f} / {g['rss']:.0f} ({g['n']:.0f})" if g else "-")
        rows.append([k, *cells])
    rows.append(
        ["**all**"]
        + [
            f"**{states[n]['total_pss_mib']:.0f}** / {states[n]['total_rss_mib']:.0f}"
            for n in STATES
        ]
    )
    idle = states["idle"]["total_pss_mib"]
    serving = states["serving"]["groups"]
    per_replica = [
        f"{k.split(': ')[1]} {g['pss'] / g['n']:.0f} MiB PSS ({g['rss'] / g['n']:.0f} RSS)"
        for k, g in sorted(serving.items())
        if k.startswith("inference: ")
    ]
    met = "**met**" if idle < AIM_IDLE_MIB else "**not met**"
    return "\n".join(
        [
            "# Memory: the local stack idle, after a training, and serving",
            "",
            "MiB, PSS / RSS (processes). PSS shares each page among the processes that map "
            "it, so a column's PSS adds up; RSS counts shared pages in every process.",
            "",
            table("process | " + " | ".join(STATES), "l" + "r" * len(STATES), rows),
            "",
            f"- Idle stack: **{idle:.0f} MiB** PSS; aim under {AIM_IDLE_MIB} MiB: {met}.",
            f"- Per inference replica ({res['model']}, 1 replica): " + "; ".join(per_replica) + ".",
            "- After a training, the warm Ray workers hold the training pool's process of that "
            "model code (PyTorch and the model imported: `kafkaml_ray.train.pool`) and those of "
            "the run's runner and read tasks, which the Ray head keeps without work for "
            "`KAFKAML_WORKER_IDLE_S` (60 s) once it has more processes than CPUs; Ray Data's "
            "two actors stay from the first read. The framework's model-code "
            "validator stays from the registration until `KAFKAML_VALIDATOR_IDLE_S` (600 s) "
            "pass without one. A CPU inference's Predictor replica loads its model only at "
            "its first HTTP request.",
            f"- Machine: {res['machine'].get('cores')} cores; whole run "
            f"{res['seconds'] / 60:.1f} min.",
            "",
            "`python -m benchmarks.memory`",
            "",
        ]
    )


def plot(res: dict[str, Any], path: Path) -> None:
    """Stacked PSS by kind of process, per state."""
    states = res["states"]
    kinds = sorted({k for s in states.values() for k in s["groups"]})
    with figure(path, (8, 4)) as ax:
        bottom = [0.0] * len(STATES)
        for k in kinds:
            height = [states[n]["groups"].get(k, {}).get("pss", 0.0) for n in STATES]
            ax.bar(list(STATES), height, 0.6, bottom, label=k)
            bottom = [b + h for b, h in zip(bottom, height, strict=True)]
        ax.axhline(AIM_IDLE_MIB, color="black", linestyle="--", linewidth=1)
        ax.set_ylabel("MiB (PSS)")
        ax.set_title("The local stack's memory")
        ax.tick_params(axis="x", labelsize=8)
        ax.legend(fontsize=7)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.memory", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    write_results(args.out, "memory", run(), markdown, plot)


if __name__ == "__main__":
    main()
