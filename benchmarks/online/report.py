"""The online benchmark's report: its Markdown table and its plots (`benchmarks.online` measures).

Run it with `python -m benchmarks.online [--size small|full]`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._report import figure, median_range, met, num, shared_machine, table, versions

__all__ = ["markdown", "plot", "AIM_P99_S", "AIM_RATIO", "RECOVERED"]

#: a window at this prequential accuracy counts as recovered from the drift
RECOVERED = 0.9
#: ours / plain trained throughput aimed at, and the publish-to-serve p99 aimed under
AIM_RATIO = 0.9
AIM_P99_S = 5.0


def markdown(r: dict[str, Any]) -> str:
    t, d, s, m = r["throughput"], r["drift"], r["serve"], r["machine"]
    k = d["windows_to_recover"]
    recover = (
        f"**{k}** windows ({k * r['window_messages']:,} messages)"
        if k is not None
        else f"**not within {d['windows_after_drift']} windows**"
    )
    delay, ge = s["delay_s"], s["delay_ge_s"]

    def secs(v: float | None) -> str:
        return num(v, 2)

    rows = [
        [
            "trained throughput, msgs/s (windows 2..N)",
            median_range(t["ours"]["steady_msgs_per_s"]),
            median_range(t["plain"]["steady_msgs_per_s"]),
            f"**{t['ratio']:.2f}**",
            f">= {AIM_RATIO}: {met(t['aim_met'])}",
        ],
        [
            "from the start, msgs/s (ours: from the control message)",
            median_range(t["ours"]["from_start_msgs_per_s"]),
            median_range(t["plain"]["from_start_msgs_per_s"]),
            f"{t['ratio_from_start']:.2f}",
            "",
        ],
        [
            f"drift: prequential accuracy before / mean after (windows {r['drift_window']}+)",
            f"{d['before_drift_ours']:.3f} / {d['ours_mean_after_drift']:.3f}",
            f"static: - / {d['static_mean_after_drift']:.3f}",
            "",
            "",
        ],
        [
            f"drift: windows after it until a window scores >= {RECOVERED}",
            recover,
            "static: never updated",
            "",
            "report",
        ],
        [
            "publish -> first output of that version, p50 / p99 s",
            f"{secs(delay['p50'])} / **{secs(delay['p99'])}**",
            "",
            f"{s['versions_served']} versions",
            f"p99 < {AIM_P99_S:g} s: {met(s['aim_met'])}",
        ],
    ]
    curve = [
        [
            i + 1,
            num(a, 3),
            num(b, 3),
            num(d["static"][i - d["static_first_window"] + 1], 3)
            if i + 1 >= d["static_first_window"]
            else "",
        ]
        for i, (a, b) in enumerate(zip(d["ours"], d["plain"], strict=False))
    ]
    order = "ours first in odd rounds, plain first in even ones"
    return f"""# Online training: ours against a plain loop, a drift, publish to serve

`--size {r["size"]}`: {r["messages"]:,} RAW digits messages (float32 8x8, int64 labels; \
labels remapped `y -> (y + 1) % 10` from window {r["drift_window"]} on) on one partition, \
windows of {r["window_messages"]}, batch size {r["batch_size"]}, {r["epochs"]} epoch per \
window, model `{r["model"]}`; {r["repeat"]} rounds ({order}); medians (min-max).

{table("measure | ours | baseline | ratio / count | aim", "lrrrl", rows)}

- **Throughput**: ours is an online deployment (started by an incremental control message \
read by the control listener; a Ray task of 1 CPU; per window: score, fit, score the \
published version on it, publish on an accuracy gain of 0.01 ({t["ours_versions"]} versions); \
every second (`checkpoint_s` 1): checkpoint the state + offsets and record the windows and \
versions trained since the last); plain is one fresh \
process with a confluent-kafka consumer, \
`np.frombuffer`, and the same `TorchLearner` `score` then `fit` per window \
(torch threads: plain {t["plain_threads"]}, a 1-CPU Ray worker \
{r["ray_worker_threads"]["torch_threads"]}). Windows 2..N: from the end of window 1 \
(ours: the windows' `created_at`, when each was trained) to the end of the last. \
Seconds per window, ours \
{median_range(t["rounds"]["ours"][0]["window_s"], 3)}, plain \
{median_range(t["rounds"]["plain"][0]["window_s"], 3)} (first round). From the start: \
ours {median_range(t["ours"]["from_start_s"], 1)} s from the control message (hand-over, \
Ray task, imports, model build), plain {median_range(t["plain"]["from_start_s"], 1)} s from \
the process's first line.
- **Drift**: prequential accuracy (each window scored before training on it). Static: \
trained once on the first half ({r["epochs"]} epoch, plain learner), then only scored. Ours \
and the plain loop run the same steps on the same data with the same seed (each learner \
shuffles with a generator of its own): their curves differ by at most \
{d["ours_minus_plain_max_abs"]:.3f}.
- **Publish to serve**: an online run (windows of 128, improvement 0) fed 128 digits every \
{r["feed_s"]:g} s and an inference (`follow=True`, 1 replica, up in \
{s["deploy_inference_s"]:.0f} s) fed {r["input_rate"]} inputs/s for {r["serve_s"]} s: \
{s["versions_published"]} versions published, {s["versions_counted"]} after the \
inference's first output, {s["versions_served"]} of them seen in an output \
({s["versions_superseded_unserved"]} superseded before a replica looked; first output of \
that version or a newer one: p50 {secs(ge["p50"])}, p99 {secs(ge["p99"])} s); \
{s["inputs_sent"]:,} inputs, {s["outputs"]:,} outputs. Delay: from when its window was \
trained (`OnlineWindow.created_at`; the version is recorded at the checkpoint after it: \
here right after it, the windows coming 2 s apart, more than `checkpoint_s`) \
to the Kafka timestamp of the first output naming it; replicas look for a new version \
every second. With this few versions p99 is close to the largest ({secs(delay["max"])} s).
- Noise: the {shared_machine(m)}; cluster start {r["cluster_start_s"]:.0f} s. \
{versions(m, "ray", "confluent-kafka", "torch", "pytorch-ignite")}.

## Prequential accuracy by window

{table("window | ours | plain loop | static", "rrrr", curve)}

`python -m benchmarks.online --size {r["size"]}`
"""


def plot(r: dict[str, Any], path: Path) -> None:
    from matplotlib.ticker import MaxNLocator

    d, t, s = r["drift"], r["throughput"], r["serve"]
    with figure(path, (15, 4), columns=3) as (ax1, ax2, ax3):
        windows = np.arange(1, len(d["ours"]) + 1)
        ax1.plot(windows, d["ours"], marker=".", label="ours (online)")
        ax1.plot(windows, d["plain"], ls="--", lw=1, label="plain loop (online)")
        first = d["static_first_window"]
        ax1.plot(
            np.arange(first, first + len(d["static"])),
            d["static"],
            marker=".",
            label="static (trained on the first half)",
        )
        ax1.axvline(r["drift_window"] - 0.5, color="gray", ls=":", label="drift")
        ax1.axhline(RECOVERED, color="gray", lw=0.5)
        ax1.set_xlabel("window")
        ax1.set_ylabel("prequential accuracy")
        ax1.set_title("Labels remapped halfway")
        ax1.legend(fontsize=8)
        for side in ("ours", "plain"):  # each round: messages trained after window 1
            for i, run in enumerate(r["runs"][side]):
                w = run["windows"]
                seconds = [row["t"] - w[0]["t"] for row in w]
                done = np.cumsum([0] + [row["messages"] for row in w[1:]])
                color = "tab:blue" if side == "ours" else "tab:orange"
                ax2.plot(seconds, done, color=color, alpha=1.0 if i == 0 else 0.4,
                         label=side if i == 0 else None)  # fmt: skip
        ax2.set_xlabel("seconds after window 1")
        ax2.set_ylabel("messages trained")
        ax2.set_title(f"Trained throughput: ours / plain = {t['ratio']:.2f}")
        ax2.legend(fontsize=8)
        rows = [v for v in s["versions"] if v["after_first_output"]]
        ax3.plot(
            [v["version"] for v in rows],
            [np.nan if v["delay_s"] is None else v["delay_s"] for v in rows],
            "o",
            label="first output of that version",
        )
        ax3.plot(
            [v["version"] for v in rows],
            [np.nan if v["delay_ge_s"] is None else v["delay_ge_s"] for v in rows],
            "x",
            label="... or of a newer one",
        )
        ax3.axhline(AIM_P99_S, color="gray", ls=":", label=f"aim: p99 < {AIM_P99_S:g} s")
        ax3.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax3.set_xlabel("version")
        ax3.set_ylabel("seconds from publish")
        ax3.set_title("Publish to serve (follow=True)")
        ax3.legend(fontsize=8)
