"""The training pool's reuse rule, priced: a run whose model code the pool has trained
before lands on a warm process; a run of a new code version (the model edited) starts a
fresh one.

The pool reuses a process only for the same model code (`kafkaml_ray.train.pool.warm_key`):
model code can change a process for good (``torch.set_default_dtype``, thread counts,
``sys.path``, monkeypatching), and no reset finds all of it. This measures what that rule
costs a user who edits a model: the wall time from the control message to the finished
result of a run on a warm process of the same code, against a run just after an edit (a new
comment: a new code version, so a fresh process), in alternating rounds, with the phases
the runs store (`kafkaml_ray.schemas.PHASES`). The digits CNN (PyTorch) for a few epochs.

    python -m benchmarks.pool [--rounds 3] [--epochs 2] [--out benchmarks/results]

Writes ``pool.json``, ``pool.md`` and ``pool.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

from benchmarks._common import digits, local_stack, log, machine_facts, settle, summary, train_once
from benchmarks._report import figure, table, write_results

__all__ = ["main", "run", "markdown", "plot"]

MODEL = "digits-cnn-pytorch"
PHASES = ("hand-over", "read", "Ray Train start", "imports", "epochs")


def run(rounds: int, epochs: int) -> dict[str, Any]:
    from kafkaml_ray import Client
    from kafkaml_ray.demo import register_examples
    from kafkaml_ray.ingest.listener import start_listener, stop_listener
    from kafkaml_ray.train.launch import on_datasource

    facts, started = machine_facts(), time.perf_counter()
    x, y = digits()
    runs: dict[str, list[dict[str, Any]]] = {"same code": [], "new code version": []}
    with local_stack(num_cpus=4) as settings:
        client = Client(settings)
        start_listener(settings, on_datasource)
        model_id = register_examples(client, [MODEL])[MODEL]
        config = client.create_configuration("bench-pool", [model_id]).id
        code = client.get_model(model_id).code
        train_once(client, config, x, y, 1, 32)  # warm-up: the first process of this code
        for i in range(rounds):
            order = ["same code", "new code version"]
            for kind in order if i % 2 == 0 else order[::-1]:
                if kind == "new code version":  # an edit that changes nothing but the code
                    client.update_model(model_id, code=f"{code}\n# edit {i}\n")
                settle()
                r, _, wall = train_once(client, config, x, y, epochs, 32)
                runs[kind].append({"wall_s": wall, "phases": dict(r.phases)})
                log(f"round {i}: {kind}: {wall:.2f} s")
        stop_listener(settings)
    out: dict[str, Any] = {"model": MODEL, "epochs": epochs, "rounds": rounds, "runs": runs}
    for kind, got in runs.items():
        out[kind] = {
            "wall_s": summary([g["wall_s"] for g in got]),
            "phases": {p: summary([g["phases"].get(p, 0.0) for g in got]) for p in PHASES},
        }
    same, new = out["same code"]["wall_s"]["median"], out["new code version"]["wall_s"]["median"]
    out["new_version_cost_s"] = new - same
    out["machine"], out["seconds"] = facts, time.perf_counter() - started
    return out


def _cell(s: dict[str, Any]) -> str:
    return f"{s['median']:.2f} ({s['min']:.2f}-{s['max']:.2f})"


def markdown(res: dict[str, Any]) -> str:
    kinds = ("same code", "new code version")
    rows = [["wall, control message to finished", *(_cell(res[k]["wall_s"]) for k in kinds)]]
    rows += [[p, *(_cell(res[k]["phases"][p]) for k in kinds)] for p in PHASES]
    return "\n".join(
        [
            "# The training pool: a warm process of the same code vs a new code version",
            "",
            f"{res['model']}, {res['epochs']} epochs, {res['rounds']} rounds of each, "
            "alternating; seconds, median (min-max).",
            "",
            table("seconds | same code (warm) | new code version (fresh)", "lrr", rows),
            "",
            f"- An edited model's first run costs **{res['new_version_cost_s']:.1f} s** more "
            "than a run on a warm process: a fresh worker process and the framework's import "
            "(in `Ray Train start` and `imports`). Every later run of that version is warm.",
            "- The rule it pays for: a process trains one model code only, so a model that "
            "sets `torch.set_default_dtype`, thread counts, `sys.path` or patches a module "
            "cannot change another model's run (`tests/train/test_training.py`). The other way, "
            "restoring each piece of state after a run, is not built: no list of pieces is "
            "complete (any module's globals, C-level state), and a missed one is silent.",
            f"- Machine: {res['machine'].get('cores')} CPUs; whole run "
            f"{res['seconds'] / 60:.1f} min.",
            "",
            f"`python -m benchmarks.pool --rounds {res['rounds']} --epochs {res['epochs']}`",
            "",
        ]
    )


def plot(res: dict[str, Any], path: Path) -> None:
    """The median seconds of each phase, stacked, for the two kinds of run."""
    kinds = ("same code", "new code version")
    with figure(path, (6, 3.5)) as ax:
        bottom = [0.0, 0.0]
        for phase in PHASES:
            height = [res[k]["phases"][phase]["median"] for k in kinds]
            ax.bar(
                ["same code (warm)", "new code version (fresh)"], height, 0.5, bottom, label=phase
            )
            bottom = [b + h for b, h in zip(bottom, height, strict=True)]
        ax.set_ylabel("seconds (median)")
        ax.set_title(f"{res['model']}: a run's phases")
        ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.pool", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    write_results(args.out, "pool", run(args.rounds, args.epochs), markdown, plot)


if __name__ == "__main__":
    main()
