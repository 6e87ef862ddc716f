"""Kafka -> decoded data: our Ray Dataset path against a plain confluent-kafka consumer loop.

One run, one embedded broker, the same topics: ``--messages`` RAW digits messages (float32
8x8 images, int64 labels in the keys, tiled from scikit-learn's digits) sent by `RawSink`
once to a 1-partition topic and once to a 4-partition topic. For each topic, after one
warm-up of each, ``--repeat`` timed rounds alternate which side goes first (each step first
waits for idle CPUs):

- **ours**: `kafkaml_ray.ingest.dataset.read_ranges` on the control message's ranges, then
  ``.dataset.materialize()``. Timed from the call until every block is computed: scheduling
  one Ray task per range, each task's consumer (creation, watermark check, fetching),
  decoding into numpy, building the Arrow block and storing it in Ray's object store. The
  blocks stay in the object store (nothing is copied to the driver).
- **plain**: one consumer in this process, ``assign()`` to every partition of the ranges, a
  ``consume(10000)`` loop keeping values and keys, then one ``np.frombuffer`` each into a
  ``(n, 8, 8)`` float32 array and an int64 label array. Timed from creating the consumer to
  the two arrays.

Both use the same librdkafka settings: the library's defaults, our reader's
`kafkaml_ray.ingest.dataset.BULK_READ` (``fetch.queue.backoff.ms=10``: with the default
1 s, a consumer that empties its prefetch queue waits out that second, which made the
plain loop's rounds bimodal, 0.37 s or 1.3 s), plus ``--consumer-config``. Throughput is
messages / median time; ``ratio`` is ours / plain (above 1: ours is faster), from the
medians and from the best rounds (best-of-N); a ratio whose sides spread (max-min)/median
more than 20% is flagged.

    python -m benchmarks.ingest [--messages N] [--repeat K] [--out benchmarks/results] [--quick]
"""

from __future__ import annotations

import argparse
import os
import time
import uuid
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import (
    digits,
    local_stack,
    machine_facts,
    produce_digits,
    settle,
    summary,
)
from benchmarks._report import (
    figure,
    median_range,
    met,
    num,
    shared_machine,
    table,
    versions,
    write_results,
)
from kafkaml_ray.ingest import TopicRange
from kafkaml_ray.ingest.dataset import BULK_READ, read_ranges

__all__ = ["main", "plain_read", "ours_read"]

PARTITIONS = (1, 4)
#: Aims on 2 cores: ours at least as fast as plain at 1 partition (best-of-N), and at 4
#: partitions 1.8x (its 4 read tasks against one loop: 0.9 per core).
AIM_BEST_1 = 1.0
AIM_RATIO_4 = 1.8
#: A ratio whose sides' rounds spread more than this is flagged as noisy.
NOISY = 0.2


def plain_read(
    kafka_config: dict[str, Any], ranges: list[TopicRange], timeout_s: float = 120.0
) -> tuple[np.ndarray, np.ndarray]:
    """The baseline: one consumer, ``assign()``, a consume loop, one decode at the end.
    The ranges cover whole partitions here, so counting messages bounds the read."""
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            **BULK_READ,
            **kafka_config,
            "group.id": "plain-benchmark",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    consumer.assign([TopicPartition(r.topic, r.partition, r.start) for r in ranges])
    left = sum(len(r) for r in ranges)
    values, keys = [], []
    deadline = time.monotonic() + timeout_s
    try:
        while left:
            if time.monotonic() > deadline:
                raise TimeoutError(f"plain read: {left} messages missing after {timeout_s:.0f}s")
            for m in consumer.consume(num_messages=10_000, timeout=1.0):
                if m.error() is None:
                    values.append(m.value())
                    keys.append(m.key())
                    left -= 1
    finally:
        consumer.close()
    x = np.frombuffer(b"".join(values), dtype=np.float32).reshape(-1, 8, 8)
    y = np.frombuffer(b"".join(keys), dtype=np.int64)
    return x, y


def ours_read(kafka_config: dict[str, Any], msg) -> Any:
    """Our path: `read_ranges` (one Ray task per range), then the materialized Dataset."""
    data = read_ranges(kafka_config, msg.ranges, msg.input_format, msg.input_config)
    if data.count != msg.total_msg or data.malformed:
        raise AssertionError(f"ours read {data.count} of {msg.total_msg} ({data.malformed} bad)")
    return data.dataset.materialize()


def _timed(fn, *args) -> tuple[float, Any]:
    start = time.perf_counter()
    out = fn(*args)
    return time.perf_counter() - start, out


def _measure(kafka_config, msg, x, y, repeat: int) -> dict[str, Any]:
    """Warm-up, then ``repeat`` rounds of ours and plain (alternating which goes first)."""
    n = msg.total_msg
    _, ds = _timed(ours_read, kafka_config, msg)
    _, (px, py) = _timed(plain_read, kafka_config, msg.ranges)
    if len(msg.ranges) == 1:  # one partition keeps the order: the arrays are the input
        np.testing.assert_array_equal(px, x)
        np.testing.assert_array_equal(py, y)
    elif not np.array_equal(np.bincount(py, minlength=10), np.bincount(y, minlength=10)):
        raise AssertionError("plain read other labels than were sent")
    if ds.count() != n:
        raise AssertionError(f"ours: the Dataset has {ds.count()} rows, not {n}")
    del ds, px, py
    ours, plain = [], []
    for i in range(repeat):
        order = ("ours", "plain") if i % 2 == 0 else ("plain", "ours")
        for side in order:
            settle()
            if side == "ours":
                seconds, out = _timed(ours_read, kafka_config, msg)
                ours.append(seconds)
            else:
                seconds, out = _timed(plain_read, kafka_config, msg.ranges)
                plain.append(seconds)
            del out  # frees the blocks / arrays before the next read
    o, p = summary(ours), summary(plain)
    return {
        "messages": n,
        "partition_sizes": [len(r) for r in msg.ranges],
        "ours_s": o,
        "plain_s": p,
        "ours_msgs_per_s": n / o["median"],
        "plain_msgs_per_s": n / p["median"],
        "ratio": p["median"] / o["median"],
        "best_ratio": p["min"] / o["min"],
        "noisy": max(o["spread"], p["spread"]) > NOISY,
    }


def run(messages: int, repeat: int, consumer_config: dict[str, str]) -> dict[str, Any]:
    facts = machine_facts()
    started = time.perf_counter()
    with local_stack(num_cpus=4) as settings:
        startup_s = time.perf_counter() - started
        x, y = digits(messages)
        kafka_config = settings.kafka_config(**consumer_config)
        produced, per = {}, {}
        for p in PARTITIONS:
            t, msg = _timed(
                produce_digits, settings, f"digits-{p}p-{uuid.uuid4().hex[:6]}", x, y, p
            )
            produced[p] = {"seconds": t, "msgs_per_s": messages / t}
            per[p] = _measure(kafka_config, msg, x, y, repeat)
    one, four = per[1], per[4]
    facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    return {
        "benchmark": "ingest",
        "messages": messages,
        "message_bytes": {"value": x[0].nbytes, "key": y[0].nbytes},
        "repeat": repeat,
        "ours_msgs_per_s": one["ours_msgs_per_s"],
        "plain_msgs_per_s": one["plain_msgs_per_s"],
        "ratio": one["ratio"],
        "best_ratio": one["best_ratio"],
        "ours_msgs_per_s_4_partitions": four["ours_msgs_per_s"],
        "plain_msgs_per_s_4_partitions": four["plain_msgs_per_s"],
        "ratio_4_partitions": four["ratio"],
        "best_ratio_4_partitions": four["best_ratio"],
        "ours_speedup_4_vs_1_partitions": four["ours_msgs_per_s"] / one["ours_msgs_per_s"],
        "aims": {
            f"best_ratio_at_least_{AIM_BEST_1}": one["best_ratio"] >= AIM_BEST_1,
            f"ratio_4_partitions_at_least_{AIM_RATIO_4}": four["ratio"] >= AIM_RATIO_4,
        },
        "partitions": {str(p): per[p] for p in PARTITIONS},
        "produce_with_rawsink": {str(p): produced[p] for p in PARTITIONS},
        "consumer_config": consumer_config,
        "startup_s": startup_s,
        "timed": {
            "ours": "read_ranges(...) + .dataset.materialize(): Ray tasks (one per range) "
            "consume, decode and store Arrow blocks in the object store",
            "plain": "one confluent-kafka Consumer in the driver: assign, consume loop, "
            "np.frombuffer into one (n, 8, 8) float32 array and one int64 array",
        },
        "machine": facts,
    }


def markdown(r: dict[str, Any]) -> str:
    rows = []
    for p in PARTITIONS:
        d = r["partitions"][str(p)]
        o, pl = d["ours_s"], d["plain_s"]
        rows.append(
            [
                p,
                num(d["ours_msgs_per_s"]),
                num(d["plain_msgs_per_s"]),
                f"**{d['ratio']:.2f}**" + (" (noisy)" if d.get("noisy") else ""),
                f"{d['best_ratio']:.2f}" if "best_ratio" in d else "-",
                median_range(o, 3, grouped=False),
                median_range(pl, 3, grouped=False),
            ]
        )
    m = r["machine"]
    spreads = [
        r["partitions"][str(p)][k]["spread"] for p in PARTITIONS for k in ("ours_s", "plain_s")
    ]
    aims = r["aims"]
    produce = ", ".join(
        f"{p} partition(s): {num(r['produce_with_rawsink'][str(p)]['msgs_per_s'])} msgs/s"
        for p in PARTITIONS
    )
    extra = ", ".join(f"`{k}={v}`" for k, v in r["consumer_config"].items()) or "none"
    header = (
        "partitions | ours msgs/s | plain msgs/s | ratio (medians) | ratio (best-of-N) | "
        "ours s (min-max) | plain s (min-max)"
    )
    return f"""# Ingest: Kafka -> decoded data, ours vs a plain consumer

{r["messages"]:,} RAW digits messages ({r["message_bytes"]["value"]} B values, \
{r["message_bytes"]["key"]} B keys) on one embedded Kafka broker; median of {r["repeat"]} \
timed rounds after one warm-up of each side; ratio = ours / plain throughput.

{table(header, "rrrrrrr", rows)}

- Aim 1 partition, best-of-N ratio >= {AIM_BEST_1}: \
{met(aims[f"best_ratio_at_least_{AIM_BEST_1}"])} ({r["best_ratio"]:.2f}; medians \
{r["ratio"]:.2f}). Aim 4 partitions, ratio >= {AIM_RATIO_4}: \
{met(aims[f"ratio_4_partitions_at_least_{AIM_RATIO_4}"])} ({r["ratio_4_partitions"]:.2f}; \
best-of-N {r["best_ratio_4_partitions"]:.2f}). Ours at 4 partitions: \
{r["ours_speedup_4_vs_1_partitions"]:.2f}x its 1-partition speed. "(noisy)": a side's \
rounds spread more than {NOISY:.0%}.
- **ours** = `read_ranges(...)` then `.dataset.materialize()`: one Ray task per partition \
range (consumer, watermark check, fetch, decode, Arrow block into Ray's object store); the \
data stays in the object store. **plain** = one confluent-kafka consumer in the driver \
(`assign`, `consume(10000)` loop, `np.frombuffer` into one array). Both start their \
consumers cold each time; same librdkafka settings: the defaults, our reader's \
`fetch.queue.backoff.ms=10` (the default 1 s stalled a consumer that emptied its prefetch \
queue), extra: {extra}.
- 4 partitions: filled by the `random` partitioner, sizes \
{r["partitions"]["4"]["partition_sizes"]}; the plain loop still reads them in one process.
- Producing with `RawSink` (not timed above): {produce}.
- Noise: the {shared_machine(m)}; repeat spread (max-min)/median was \
{min(spreads):.0%}-{max(spreads):.0%}. {versions(m, "ray", "confluent-kafka")}.

`python -m benchmarks.ingest --messages {r["messages"]} --repeat {r["repeat"]}`
"""


def plot(r: dict[str, Any], path: Path) -> None:
    with figure(path, (6, 3.6)) as ax:
        width = 0.38
        for j, (side, color) in enumerate((("ours", "tab:blue"), ("plain", "tab:gray"))):
            xs, meds, errs = [], [], [[], []]
            for i, p in enumerate(PARTITIONS):
                d = r["partitions"][str(p)]
                s = d[f"{side}_s"]
                rate = d["messages"] / s["median"]
                xs.append(i + (j - 0.5) * width)
                meds.append(rate)
                errs[0].append(rate - d["messages"] / s["max"])
                errs[1].append(d["messages"] / s["min"] - rate)
            label = "ours (read_ranges -> Ray Dataset)" if side == "ours" else "plain consumer loop"
            ax.bar(xs, meds, width, yerr=errs, capsize=3, color=color, label=label)
        ax.set_xticks(range(len(PARTITIONS)), [f"{p} partition{'s' * (p > 1)}" for p in PARTITIONS])
        ax.set_ylabel("messages / s (median, min-max)")
        ax.set_title(f"Kafka -> decoded arrays, {r['messages']:,} RAW digits messages")
        ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--messages", type=int, default=200_000)
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    parser.add_argument("--quick", action="store_true", help="a smoke run: 20,000 messages")
    parser.add_argument(
        "--consumer-config",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an extra librdkafka consumer setting for both sides (repeatable)",
    )
    args = parser.parse_args(argv)
    if args.quick:
        args.messages, args.repeat = 20_000, 2
    consumer_config = dict(kv.split("=", 1) for kv in args.consumer_config)
    result = run(args.messages, args.repeat, consumer_config)
    write_results(args.out, "ingest", result, markdown, plot)


if __name__ == "__main__":
    main()
