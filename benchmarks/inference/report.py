"""The inference report: the results of a run with its aims judged (`results`), its Markdown
(`markdown`) and its plot (`plot`)."""

from __future__ import annotations

import statistics
from dataclasses import asdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import figure, load, median_range, met, num, table, versions
from benchmarks.inference.pipelines import (
    GPU_VARIANT,
    HEADLINE,
    PAPER_CLIENTS,
    PAPER_REPLICAS,
    REQUEST,
    SIDES,
    VARIANTS,
)

__all__ = ["results", "markdown", "plot"]

LABELS = {
    "ours": "ours (Ray Serve app)",
    "baseline": "Kafka-ML loop",
    "echo": "echo (no model)",
}
COLORS = {"ours": "tab:blue", "baseline": "tab:gray", "echo": "tab:green"}
AIM_VS_BASELINE, AIM_VS_ECHO = 10.0, 0.5
#: "No worse at light load", read with the measurement's resolution: the 95% interval of
#: p50(ours) - p50(baseline) must end below this share of the baseline's p50.
LIGHT_MARGIN = 0.05
LIGHT_AIM = f"light_load_p50_within_{LIGHT_MARGIN:.0%}_of_baseline_ci95"


def results(plan, per, grid, trained, startup_s, facts, total_s) -> dict[str, Any]:
    """The run's results as ``inference.json`` holds them: per model and pipeline, the
    headline figures of the digits CNN, the aims judged, the grid, the variants."""
    head = per[HEADLINE]["sides"]
    extra = per[HEADLINE]["variants"]
    agree = {}
    for name, m in per.items():
        for d in m["variants"].values():
            d.pop("_predictions", None)
        sides = m["sides"]
        a, b = sides["ours"].pop("_predictions", None), sides["baseline"].pop("_predictions", None)
        if a is not None and b is not None:
            agree[name] = float(np.abs(a - b).max())
    light = str(plan.loads[0])
    ours_light, base_light = head["ours"]["loads"][light], head["baseline"]["loads"][light]
    ours, base, echo = (head[s]["msgs_per_s"] for s in SIDES)
    models = {}
    for name, m in per.items():
        sides = m["sides"]
        o, b, e = (sides[s]["msgs_per_s"] for s in SIDES)
        models[name] = {
            "ours_msgs_per_s": o,
            "baseline_msgs_per_s": b,
            "echo_msgs_per_s": e,
            "ratio_vs_baseline": o / b,
            "ratio_vs_echo": o / e,
            "test_metrics": trained[name].test_metrics,
            "idle_cores_all_pipelines": m["idle_cores_all_pipelines"],
            "sides": sides,
        }
    aims = {
        f"ratio_vs_baseline_at_least_{AIM_VS_BASELINE:g}": ours / base >= AIM_VS_BASELINE,
        f"ratio_vs_echo_at_least_{AIM_VS_ECHO:g}": ours / echo >= AIM_VS_ECHO,
        "light_load_p50_no_worse_than_baseline": ours_light["p50_ms"] <= base_light["p50_ms"],
        "light_load_p99_no_worse_than_baseline": ours_light["p99_ms"] <= base_light["p99_ms"],
    }
    diff = ours_light.get("p50_diff_vs_baseline")
    if diff:  # what the rounds can tell apart: at most LIGHT_MARGIN worse, at 95%
        aims[LIGHT_AIM] = diff["ci95_high_ms"] <= LIGHT_MARGIN * base_light["p50_ms"]
    cut = plan.clients != PAPER_CLIENTS or plan.replicas != PAPER_REPLICAS
    return {
        "benchmark": "inference",
        "size": plan.size,
        "plan": asdict(plan),
        "ours_msgs_per_s": ours,
        "baseline_msgs_per_s": base,
        "echo_msgs_per_s": echo,
        "ratio_vs_baseline": ours / base,
        "ratio_vs_echo": ours / echo,
        "p50_ms": ours_light["p50_ms"],
        "p99_ms": ours_light["p99_ms"],
        "latency_load_msgs_per_s": plan.loads[0],
        "baseline_p50_ms": base_light["p50_ms"],
        "p50_diff_vs_baseline": diff,
        "baseline_p99_ms": base_light["p99_ms"],
        "echo_p50_ms": head["echo"]["loads"][light]["p50_ms"],
        "echo_p99_ms": head["echo"]["loads"][light]["p99_ms"],
        "headline": f"{HEADLINE}, 1 replica, 1 partition; p50/p99 at {plan.loads[0]} msgs/s",
        "aims": aims,
        "models": models,
        "predictions_max_abs_diff_ours_vs_baseline": agree,
        "grid": {
            "what": f"average latency of a {REQUEST}-sample request against concurrent clients, "
            "replicas = partitions",
            "clients": list(plan.clients),
            "replicas": list(plan.replicas),
            "requests_per_client": plan.requests,
            "cut": (
                f"--size {plan.size}: clients {list(plan.clients)} and replicas "
                f"{list(plan.replicas)} only (the paper: clients {list(PAPER_CLIENTS)}, "
                f"replicas {list(PAPER_REPLICAS)}); --size full runs those"
                if cut
                else None
            ),
            "cells": grid,
        },
        "variants": extra,
        "training": {
            k: {"result_id": v.result_id, "test_metrics": v.test_metrics, "wall_s": v.wall_s}
            for k, v in trained.items()
        },
        "startup_s": startup_s,
        "total_s": total_s,
        "timed": {
            "throughput": "N messages produced at full speed by InferenceProducer (linger.ms=0), "
            "timed from the first send to the N-th output consumed by the collector",
            "latency": "consume time (collector, this process) minus the send stamp in a "
            "header; 'broker' uses the output's LogAppendTime instead",
            "grid": "from a client's first send of its 256 messages to its 256th prediction "
            "consumed",
        },
        "machine": {**facts, "gpu": "none: CPU only" if not facts.get("ray_gpus") else "yes"},
    }


DIFF_HEAD = "p50 ours - baseline, ms (95% interval)"


def _interval(d: dict[str, float] | None) -> str:
    return f"{d['ms']:+,.2f} ({d['ci95_low_ms']:+,.2f} to {d['ci95_high_ms']:+,.2f})" if d else "-"


def markdown(r: dict[str, Any]) -> str:
    plan = r["plan"]
    rows = []
    for name, m in r["models"].items():
        for side in SIDES:
            s = m["sides"][side]["msgs_per_s_summary"]
            cores = statistics.median(x["pipeline_cores"] for x in m["sides"][side]["rounds"])
            ratio = (
                f"{m['ratio_vs_baseline']:.1f}x baseline, {m['ratio_vs_echo']:.2f}x echo"
                if side == "ours"
                else ""
            )
            n = m["sides"][side]["rounds"][0]["messages"]
            rows.append(
                [name, LABELS[side], f"{n:,}", median_range(s, bold=True), f"{cores:.2f}", ratio]
            )
    head = r["models"][HEADLINE]["sides"]
    light_rounds = "; ".join(
        f"{side} "
        + " / ".join(
            num(v, 1) for v in head[side]["loads"][str(plan["loads"][0])].get("round_p50_ms", [])
        )
        for side in SIDES
    )
    lat = []
    for name, m in r["models"].items():
        for rate in plan["loads"]:
            ours = m["sides"]["ours"]["loads"][str(rate)]
            cells = [name, rate, num(ours["delivered_msgs_per_s"])]
            for side in SIDES:
                d = m["sides"][side]["loads"][str(rate)]
                note = "" if d["drained"] else " (not drained)"
                cells.append(
                    f"{num(d.get('p50_ms'), 1)} / {num(d.get('p99_ms'), 1)} "
                    f"({num(d['broker'].get('p50_ms'), 0)}){note}"
                )
            lat.append([*cells, _interval(ours.get("p50_diff_vs_baseline"))])
    g = r["grid"]
    pairs = [(k, side) for k in g["replicas"] for side in ("ours", "baseline")]
    grid_rows = []
    for c in g["clients"]:
        cells = [g["cells"].get(side, {}).get(f"{k}x{c}") for k, side in pairs]
        grid_rows.append([c, *(num(d["avg_ms"]) if d else "-" for d in cells)])
    grid_head = " | ".join(["clients", *(f"{LABELS[s].split(' (')[0]} R={k}" for k, s in pairs)])
    grid_table = table(grid_head, "r" * (1 + len(pairs)), grid_rows)
    aims = r["aims"]
    light_ci = ""
    if d := r.get("p50_diff_vs_baseline"):
        light_ci = (
            f" The p50 difference ours - baseline is {d['ms']:+.3f} ms, 95% interval "
            f"{d['ci95_low_ms']:+.3f} to {d['ci95_high_ms']:+.3f} ms; at most "
            f"{LIGHT_MARGIN:.0%} ({LIGHT_MARGIN * r['baseline_p50_ms']:.2f} ms) worse at 95%: "
            f"{met(aims[LIGHT_AIM])}."
        )
    prof = r["models"][HEADLINE]["sides"]["ours"].get("profile", {})
    pm = r["models"][HEADLINE]["sides"]["baseline"].get("model_predict_ms", {})
    v = r["variants"]
    m = r["machine"]
    grid_note = g["cut"] or "the paper's full grid"
    variant_lines = ""
    if v:
        head = r["models"][HEADLINE]["sides"]
        light = str(plan["loads"][0])

        def row(label: str, d: dict, base: dict, lat: dict | None) -> list[str]:
            ratio = d["msgs_per_s"] / base["msgs_per_s"]
            lat_text = f"{num(lat['p50_ms'], 1)} / {num(lat['p99_ms'], 1)}" if lat else "-"
            s = d.get("msgs_per_s_summary")
            rate = num(d["msgs_per_s"]) + (f" ({num(s['min'])}-{num(s['max'])})" if s else "")
            # The rounds were taken in turn: round i of each against round i of its default.
            pairs = zip(d["rounds"], base["rounds"], strict=True)
            per = [a["msgs_per_s"] / b["msgs_per_s"] for a, b in pairs]
            if d is not base and per:
                return [label, rate, f"{ratio:.2f} ({min(per):.2f}-{max(per):.2f})", lat_text]
            return [label, rate, f"{ratio:.2f}", lat_text]

        o, b = head["ours"], head["baseline"]
        rows_v = [
            row(
                f"ours, defaults (batch_size {o['batch_size']}, max_wait_ms {o['max_wait_ms']:g})",
                o,
                o,
                o["loads"][light],
            )
        ]
        for name, side, options, _ in (*VARIANTS, GPU_VARIANT):
            d = v.get(name)
            if d is None:
                continue
            label = f"{side}, " + ", ".join(f"{k}={val}" for k, val in options.items())
            base = o if side == "ours" else b
            rows_v.append(row(label, d, base, d["loads"].get(light)))
            if name == "ours_batch_64":
                rows_v.append(
                    row("baseline, as Kafka-ML (flush after each)", b, b, b["loads"][light])
                )
        header = (
            "digits CNN, 1 replica | msgs/s, median (min-max) | vs its default (per round, "
            f"min-max) | p50 / p99 ms at {light} msgs/s"
        )
        variant_lines = "\n" + table(header, "lrrl", rows_v) + "\n\n"
    profile_lines = ""
    if prof:
        loop = ", ".join(f"{k} {v:.0%}" for k, v in prof.get("ingress_loop_wall_share", {}).items())
        sub, fin = (
            ", ".join(f"{k} {v:.0%}" for k, v in prof.get(f"ingress_{f}_wall_share", {}).items())
            or "-"
            for f in ("submit", "finish")
        )
        model_share = prof.get("predictor_cpu_share_in_model")
        predictor = (
            f"Predictor CPU in `TrainedModel.predict`: {num(100 * model_share)}%"
            if model_share is not None
            else "the Predictor deployment was idle (a CPU inference predicts in the ingress)"
        )
        batch_key = f"handle_round_trip_ms_{plan['batch_size']}"
        profile_lines = (
            f"- Predictor handle round trip from this process (the GPU and HTTP path): "
            f"{num(prof.get('handle_round_trip_ms_1'), 1)} ms for 1 sample, "
            f"{num(prof.get(batch_key), 1)} ms for "
            f"{plan['batch_size']}; the model alone (baseline process): "
            f"{num(pm.get('1'), 2)} ms / {num(pm.get(str(plan['batch_size'])), 2)} ms.\n"
            f"- py-spy, ingress consume loop (wall time, during a backlog): {loop or '-'}; "
            f"inside `_submit`: {sub}; inside `_finish`: {fin}. {predictor}.\n"
        )

    def steps(d: dict) -> str:
        per = (d.get("stopped") or [{}])[0].get("ms_per_message", {})
        return ", ".join(f"{k.replace('_', ' ')} {v:.2f}" for k, v in per.items()) or "-"

    head = r["models"][HEADLINE]["sides"]
    profile_lines += (
        f"- The baseline's loop, busy time per message (ms, all its messages): "
        f"{steps(head['baseline'])}"
    )
    if "baseline_no_flush" in v:
        profile_lines += f"; without the flush: {steps(v['baseline_no_flush'])}"
    profile_lines += ".\n"
    agree = ", ".join(
        f"{k} {v:.1e}" for k, v in r["predictions_max_abs_diff_ours_vs_baseline"].items()
    )
    acc = r["models"][HEADLINE]["sides"]["ours"].get("warmup_accuracy")
    echo_rounds = [x for m in r["models"].values() for x in m["sides"]["echo"]["rounds"]]
    share = statistics.median(x["produce_s"] / x["seconds"] for x in echo_rounds)
    bound = (
        f"Echo's rounds spend {share:.0%} of their time (median) still producing the backlog: "
        "this process (producing, and reading the outputs in the same interpreter) is what "
        "limits them, so echo's figures are a lower bound of the ceiling and `ratio_vs_echo` "
        "an upper bound."
        if share > 0.3
        else f"Producing the backlog took {share:.0%} of an echo round (median)."
    )
    throughput_table = table(
        "model | pipeline | msgs per round | msgs/s, median (min-max) | cores used | ours vs",
        "llrrrl",
        rows,
    )
    latency_table = table(
        f"model | offered msgs/s | ours delivered msgs/s | ours | baseline | echo | {DIFF_HEAD}",
        "lrrllll",
        lat,
    )
    return f"""# Inference: ours (Ray Serve) vs Kafka-ML's loop vs an echo ceiling

`--size {r["size"]}`. Same embedded broker, same trained PyTorch models (digits CNN, \
regression MLP; {plan["epochs"]} epochs), same RAW messages; one replica and one partition \
unless said; ours with `batch_size={plan["batch_size"]}` and its other defaults. \
Machine: {m["cores"]} cores ({m["cpu"]}), {m["gpu"]}, shared with other jobs.

## Throughput: a backlog drained, 1 replica, 1 partition

{throughput_table}

- `ratio_vs_baseline` **{r["ratio_vs_baseline"]:.1f}** (aim >= {AIM_VS_BASELINE:g}: \
{met(aims[f"ratio_vs_baseline_at_least_{AIM_VS_BASELINE:g}"])}), \
`ratio_vs_echo` **{r["ratio_vs_echo"]:.2f}** (aim >= {AIM_VS_ECHO:g}: \
{met(aims[f"ratio_vs_echo_at_least_{AIM_VS_ECHO:g}"])}); digits CNN.
- Each round produces a backlog at full speed (a plain producer, values encoded by \
`InferenceProducer`'s RAW format, far faster than ours or the baseline) and times from the first \
send to the last output consumed; {plan["repeat"]} rounds per pipeline, sized by an untimed \
first round to about {plan["round_s"]:g} s (at least {plan["backlog"]:,} messages), taken \
in turn over all pipelines of a model, rotating the order.
- {bound}
- "cores used": CPU seconds of the pipeline's own processes (ours: ingress + predictor \
replicas; the others: their actor) per second of the round. The broker and this process \
(producer, collector) use the rest of the machine.
- Predictions checked on the warm-up messages: digits accuracy {num(acc and 100 * acc, 1)}% \
(ours); ours vs baseline max abs difference: {agree}.

## Latency at fixed offered loads: p50 / p99 ms (broker p50)

{latency_table}

- {plan["load_rounds"]} rounds of {plan["load_s"]:g} s per load ({2 * plan["load_rounds"]} at the \
light load), the pipelines taking turns (so that a change in the machine's load falls on all \
of them), percentiles over the messages of all rounds; the p50 difference's interval comes \
from a two-level bootstrap (round pairs, then messages within them); paced producer; \
latency = consume time in the benchmark process minus the send time stamped in a header; \
(broker) = the output's LogAppendTime minus the send time (ms resolution). "not drained": \
outputs still missing after the wait. p50 of each round at the light load, digits CNN: \
{light_rounds}.
- Light load ({plan["loads"][0]} msgs/s), digits CNN: ours p50/p99 {r["p50_ms"]:.1f} / \
{r["p99_ms"]:.1f} ms, baseline {r["baseline_p50_ms"]:.1f} / {r["baseline_p99_ms"]:.1f} ms, \
echo {r["echo_p50_ms"]:.1f} / {r["echo_p99_ms"]:.1f} ms. Aim no worse than the baseline: \
p50 {met(aims["light_load_p50_no_worse_than_baseline"])} as two numbers, p99 \
{met(aims["light_load_p99_no_worse_than_baseline"])}.{light_ci}

## Requests against clients (the paper's Tables 1-2 shape): average ms per 256-sample request

{grid_table}

- Digits CNN; R = replicas = partitions; each client sends {g["requests_per_client"]} \
requests one after the other (256 messages with one request id, then waits for their 256 \
predictions). Grid: {grid_note}.

## Where the time goes

{profile_lines}{variant_lines}
See `benchmarks/README.md` ("Inference: what the numbers say") for the reading.

## Noise

{load(m)}; cluster start {r["startup_s"]:.0f} s, whole run {r["total_s"] / 60:.1f} min. \
{versions(m, "ray", "confluent-kafka", "torch")}.

`python -m benchmarks.inference --size {r["size"]}`
"""


def plot(r: dict[str, Any], path: Path) -> None:
    from matplotlib.ticker import FuncFormatter, NullFormatter

    plain = FuncFormatter(lambda v, _: f"{v:,.0f}")
    with figure(path, (15, 4.4), 3) as (ax1, ax2, ax3):
        names = list(r["models"])
        width = 0.27
        for j, side in enumerate(SIDES):
            vals = [r["models"][n]["sides"][side]["msgs_per_s"] for n in names]
            xs = np.arange(len(names)) + (j - 1) * width
            ax1.bar(xs, vals, width, color=COLORS[side], label=LABELS[side])
            for xv, v in zip(xs, vals, strict=True):
                ax1.text(xv, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=7)
        ax1.set_xticks(range(len(names)), names)
        ax1.set_yscale("log")
        ax1.yaxis.set_major_formatter(plain)
        ax1.set_ylim(top=ax1.get_ylim()[1] * 3)
        ax1.set_ylabel("messages / s (backlog drained, median)")
        ax1.set_title("Throughput, 1 replica, 1 partition")
        ax1.legend(fontsize=8, loc="upper left")
        loads = r["plan"]["loads"]
        for side in SIDES:
            d = [r["models"][HEADLINE]["sides"][side]["loads"][str(v)] for v in loads]
            ax2.plot(
                loads, [x.get("p50_ms") for x in d], "o-", color=COLORS[side], label=f"{side} p50"
            )
            ax2.plot(
                loads, [x.get("p99_ms") for x in d], "x--", color=COLORS[side], label=f"{side} p99"
            )
        ax2.set_xscale("log")
        ax2.set_yscale("log")
        for axis in (ax1.yaxis, ax2.xaxis, ax2.yaxis):
            axis.set_minor_formatter(NullFormatter())
        ax2.xaxis.set_major_formatter(plain)
        ax2.yaxis.set_major_formatter(plain)
        ax2.set_xlabel("offered load, messages / s")
        ax2.set_ylabel("end-to-end latency, ms")
        ax2.set_title(f"Latency vs offered load, {HEADLINE}")
        ax2.legend(fontsize=7, ncol=3)
        g = r["grid"]
        markers = dict(zip(g["replicas"], "os^D", strict=False))
        for k in g["replicas"]:
            for side, style in (("ours", "-"), ("baseline", "--")):
                cells = g["cells"].get(side, {})
                pts = [
                    (c, cells[f"{k}x{c}"]["avg_ms"]) for c in g["clients"] if f"{k}x{c}" in cells
                ]
                if pts:
                    ax3.plot(
                        [p[0] for p in pts],
                        [p[1] for p in pts],
                        style,
                        marker=markers[k],
                        color=COLORS[side],
                        label=f"{side}, replicas = partitions = {k}",
                    )
        ax3.set_xscale("log", base=2)
        ax3.set_yscale("log")
        ax3.set_xticks(g["clients"], [str(c) for c in g["clients"]])
        ax3.yaxis.set_major_formatter(plain)
        ax3.yaxis.set_minor_formatter(NullFormatter())
        ax3.set_xlabel("concurrent clients")
        ax3.set_ylabel("average latency of a 256-sample request, ms")
        ax3.set_title(f"Requests vs clients, {HEADLINE}")
        ax3.legend(fontsize=7)
