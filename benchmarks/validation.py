"""Registering a model, priced: how long `Client.add_model` takes to validate model code
through the framework's warm validator (each validation in a child process forked from it),
against the way it was done before, a fresh Ray worker per validation (``max_calls=1``)
that imports the framework and builds the model, in the same run on the same Ray head.

For each framework's digits example, in alternating rounds: ours (``add_model`` of the
example with a new comment, so that no cache answers) and the baseline (a Ray task with
``num_cpus=0.5, max_calls=1`` calling the framework's ``describe``, as `validate_model` did).
The validator's own start (the first registration of a framework) is reported apart.

    python -m benchmarks.validation [--rounds 5] [--out benchmarks/results]

Writes ``validation.json``, ``validation.md`` and ``validation.png`` to ``--out``.
"""

from __future__ import annotations

import argparse
import os
import time
from pathlib import Path
from typing import Any

from benchmarks._common import local_stack, log, machine_facts, settle, summary
from benchmarks._report import figure, shared_machine, table, write_results

__all__ = ["main", "run", "markdown", "plot"]

EXAMPLES = ("digits-cnn-pytorch", "digits-cnn-keras", "digits-sgd-sklearn", "digits-trees-xgboost")


def _fresh_worker(framework: str, code: str) -> dict[str, Any]:
    """The baseline: build the code in this (fresh) worker, as validation used to."""
    from kafkaml_ray import frameworks

    return frameworks.get(framework).describe(code)


def run(rounds: int) -> dict[str, Any]:
    import ray

    from kafkaml_ray import Client
    from kafkaml_ray.demo import EXAMPLES as KNOWN
    from kafkaml_ray.demo import EXAMPLES_DIR

    facts, started = machine_facts(), time.perf_counter()
    baseline = ray.remote(num_cpus=0.5, max_calls=1)(_fresh_worker)
    out: dict[str, Any] = {"rounds": rounds, "frameworks": {}}
    with local_stack(num_cpus=2) as settings:
        client = Client(settings)
        for example in EXAMPLES:
            fw, filename, _ = KNOWN[example]
            code = (EXAMPLES_DIR / filename).read_text()
            settle()
            t = time.perf_counter()
            client.add_model(f"{fw}-first", fw, code + "\n# first\n")
            first = time.perf_counter() - t
            times: dict[str, list[float]] = {"ours": [], "fresh worker": []}
            for i in range(rounds):
                for side in ("ours", "fresh worker") if i % 2 == 0 else ("fresh worker", "ours"):
                    edited = f"{code}\n# round {i}\n"
                    settle(max_s=5)
                    t = time.perf_counter()
                    if side == "ours":
                        client.add_model(f"{fw}-{i}", fw, edited)
                    else:
                        ray.get(baseline.remote(fw, edited))
                    times[side].append(time.perf_counter() - t)
            ours, base = summary(times["ours"]), summary(times["fresh worker"])
            ratios = [b / o for o, b in zip(times["ours"], times["fresh worker"], strict=True)]
            out["frameworks"][fw] = {
                "validator_start_s": first,
                "ours_s": ours,
                "fresh_worker_s": base,
                "speedup": summary(ratios),
            }
            log(f"{fw}: ours {ours['median']:.2f} s, a fresh worker {base['median']:.2f} s")
    facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    out["machine"], out["seconds"] = facts, time.perf_counter() - started
    return out


def markdown(r: dict[str, Any]) -> str:
    rows = []
    for fw, d in r["frameworks"].items():
        o, b, s = d["ours_s"], d["fresh_worker_s"], d["speedup"]
        rows.append(
            [
                fw,
                f"{o['median']:.2f} ({o['min']:.2f}-{o['max']:.2f})",
                f"{b['median']:.2f} ({b['min']:.2f}-{b['max']:.2f})",
                f"{s['median']:.1f}x ({s['min']:.1f}-{s['max']:.1f})",
                f"{d['validator_start_s']:.1f}",
            ]
        )
    header = (
        "framework | ours: add_model, s, median (min-max) | a fresh worker per validation, s "
        "| speed-up (per round, min-max) | first registration (the validator starts), s"
    )
    return "\n".join(
        [
            "# Registering a model: the warm validator vs a fresh worker per validation",
            "",
            table(header, "lrrrr", rows),
            "",
            f"- {r['rounds']} alternating rounds per framework, each on the digits example "
            "with a new comment (no cache answers); ours is the whole `Client.add_model` "
            "(store writes included), the baseline only the Ray task.",
            f"- The {shared_machine(r['machine'])}; whole run {r['seconds'] / 60:.1f} min.",
            "",
            "`python -m benchmarks.validation`",
            "",
        ]
    )


def plot(r: dict[str, Any], path: Path) -> None:
    import numpy as np

    fws = list(r["frameworks"])
    x = np.arange(len(fws))
    with figure(path, (7, 3.5)) as ax:
        for k, (key, label) in enumerate(
            [("ours_s", "ours (warm validator)"), ("fresh_worker_s", "a fresh worker")]
        ):
            med = [r["frameworks"][f][key]["median"] for f in fws]
            lo = [m - r["frameworks"][f][key]["min"] for m, f in zip(med, fws, strict=True)]
            hi = [r["frameworks"][f][key]["max"] - m for m, f in zip(med, fws, strict=True)]
            ax.bar(x + (k - 0.5) * 0.4, med, 0.4, yerr=[lo, hi], label=label, capsize=3)
        ax.set_xticks(x, fws)
        ax.set_ylabel("seconds per registration")
        ax.set_title("Validating model code")
        ax.legend()


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.validation", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    write_results(args.out, "validation", run(args.rounds), markdown, plot)


if __name__ == "__main__":
    main()
