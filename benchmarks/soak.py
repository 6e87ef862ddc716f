"""Soak: a sustained mixed stream through the control listener and one inference.

On a private broker and Ray head (`local_stack`), with the control listener running as
``kafkaml-ray up`` runs it (`start_listener`), the example digits CNN is trained once
through the library (``--epochs``) and deployed as one inference (1 replica, the library's
defaults) on an input topic of ``--partitions`` partitions. Then, for ``--minutes``:

- **inputs** at ``--rate`` messages a minute, RAW float32 8x8 digits (keys: their index),
  a ``--poison`` share of them poison, evenly spread, in turn: ``b""``, a sample cut to 255
  bytes, random bytes of a random wrong length;
- **control messages**, ``--control`` a minute: well formed ones naming the finished
  training deployment (stored; its hand-over fails: it waits for no data) or no deployment
  (stored as ``unknown_deployment``), a ``--poison`` share of them (and at least one of
  each kind) poison: the value ``b"[" * 100000``, a non-ASCII ``deployment_id`` header
  (Arabic-Indic digits), a 9-byte key.

Per ``--window`` s: what was sent; predictions and dead letters read back (``<output>``
and ``<output>.dlq``, matched to their inputs by the ``kafkaml-input-partition``/``-offset``
headers); in/out msgs/s; the consumer lag (the inference group's committed offsets against
the high watermarks, sampled every second); the RSS of the ingress replica, the listener
actor and the Ray node (`ray start` and its descendants). After at most ``--drain`` s to
catch up, the checks: **lost** (good inputs without a prediction) = 0; **dead letters =
poison sent** (the same offsets); **stalled partitions** (committed offset unmoved 60 s
while lagging) = 0; **control messages stored** (Datasource rows; refused ones count) = sent.

    python -m benchmarks.soak [--minutes 3] [--rate 3000] [--poison 0.01] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import contextlib
import os
import re
import threading
import time
import uuid
from collections import Counter, defaultdict
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import (
    create_topic,
    digits,
    local_stack,
    log,
    machine_facts,
    settle,
    train_once,
)
from benchmarks._report import figure, num, shared_machine, table, versions, write_results

__all__ = ["main", "run", "stalled"]

STALL_S = 60.0
INPUT_POISON = ("empty", "cut_255_bytes", "junk")
CONTROL_POISON = ("brackets_100000", "non_ascii_header", "key_9_bytes")
INPUT_CONFIG = {"data_type": "float32", "data_reshape": "8 8"}
UNKNOWN_DEPLOYMENT = 999_999


def train(settings: Any, epochs: int) -> tuple[Any, dict[str, Any]]:
    """Start the listener, register and train the example digits CNN once (redone once if
    the run fails on a busy machine); the result, its deployment and its data topic."""
    from kafkaml_ray import Client
    from kafkaml_ray.demo import register_examples
    from kafkaml_ray.ingest.listener import start_listener
    from kafkaml_ray.train.launch import on_datasource

    client = Client(settings)
    start_listener(settings, on_datasource)
    model = register_examples(client, ["digits-cnn-pytorch"])["digits-cnn-pytorch"]
    config = client.create_configuration("soak-digits", [model])
    r, topic, seconds = train_once(client, config.id, *digits(), epochs, 32)
    out = {"result_id": r.id, "deployment_id": r.deployment_id, "topic": topic, "epochs": epochs}
    return client, {**out, "wall_s": seconds, "test_metrics": r.test_metrics}


class _Reader:
    """A consumer read by a thread of this process until `close`; it never commits (one
    bears the inference's group id, to read that group's offsets)."""

    def __init__(self, settings: Any, group: str):
        from confluent_kafka import Consumer

        self.consumer = Consumer(
            settings.kafka_config(**{"group.id": group, "enable.auto.commit": False})
        )
        self.t0 = time.monotonic()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True, name=group)
        self._thread.start()

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


class Outputs(_Reader):
    """Reads the output and dead-letter topics from their start; counts, per input
    (partition, offset), its predictions and dead letters."""

    def __init__(self, settings: Any, topic: str, labels: np.ndarray):
        from confluent_kafka import TopicPartition

        self.dlq, self.labels = f"{topic}.dlq", labels
        self.pred, self.dead = Counter(), Counter()  # input (partition, offset) -> outputs
        self.correct, self.errors = 0, Counter()  # dead letters' error headers
        self.tps = [TopicPartition(topic, 0, 0), TopicPartition(self.dlq, 0, 0)]
        super().__init__(settings, f"soak-out-{uuid.uuid4().hex[:8]}")

    def _run(self) -> None:
        import orjson

        self.consumer.assign(self.tps)
        while not self._stop.is_set():
            for m in self.consumer.consume(num_messages=5000, timeout=0.2):
                if m.error() is not None:
                    continue
                h = dict(m.headers() or ())
                src = (int(h["kafkaml-input-partition"]), int(h["kafkaml-input-offset"]))
                if m.topic() == self.dlq:
                    self.dead[src] += 1
                    error = h.get("error", b"").decode("utf-8", "replace")
                    self.errors[re.sub(r"message \d+", "message i", error)[:90]] += 1
                else:
                    self.pred[src] += 1
                    label = self.labels[int(m.key()) % len(self.labels)]
                    self.correct += int(np.argmax(orjson.loads(m.value())["values"]) == label)


class LagSampler(_Reader):
    """Every second: the inference group's committed offset and the high watermark of each
    input partition (a consumer of that group id that never joins it)."""

    def __init__(self, settings: Any, group: str, topic: str, partitions: int):
        from confluent_kafka import TopicPartition

        self.tps = [TopicPartition(topic, p) for p in range(partitions)]
        self.samples: list[tuple[float, list[int], list[int]]] = []
        super().__init__(settings, group)

    def _run(self) -> None:
        while not self._stop.wait(1.0):
            with contextlib.suppress(Exception):  # a slow broker answer: the next second
                committed = [max(tp.offset, 0) for tp in self.consumer.committed(self.tps, 5)]
                high = [self.consumer.get_watermark_offsets(tp, 5)[1] for tp in self.tps]
                self.samples.append((time.monotonic() - self.t0, committed, high))

    def lag(self, since: float = -1.0) -> int:
        """The largest total lag sampled after ``since`` (seconds from the start)."""
        return max((sum(h) - sum(c) for t, c, h in self.samples if t > since), default=0)


def stalled(samples: list, partitions: int, stall_s: float = STALL_S) -> list[float]:
    """Per partition: the longest time its committed offset stayed put while it had lag."""
    longest = []
    for p in range(partitions):
        since, last, worst = None, None, 0.0
        for t, com, high in samples:
            if high[p] - com[p] <= 0 or com[p] != last or since is None:
                since, last = t, com[p]
            worst = max(worst, t - since)
        longest.append(worst)
    return longest


def _pids(settings: Any, inference_id: int) -> dict[str, list[int]]:
    """The ingress replica's and the listener actor's processes; the Ray node's."""
    import psutil
    import ray
    from ray.util.state import list_actors

    from kafkaml_ray.ingest.listener import LISTENER_NAME
    from kafkaml_ray.stack import run_dir

    out: dict[str, list[int]] = {"ingress": [], "listener": [], "node": []}
    address = ray.get_runtime_context().gcs_address
    for a in list_actors(address=address, filters=[("state", "=", "ALIVE")], limit=1000):
        if (a.class_name or "").endswith(f"inference-{inference_id}:KafkaIngress"):
            out["ingress"].append(a.pid)
        elif a.name == LISTENER_NAME:
            out["listener"].append(a.pid)
    with contextlib.suppress(OSError, ValueError, psutil.Error):
        head = psutil.Process(int((run_dir(settings) / "ray.pid").read_text().split()[0]))
        out["node"] = [head.pid, *(c.pid for c in head.children(recursive=True))]
    return out


def _rss_mib(pids: list[int]) -> float | None:
    import psutil

    rss = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            rss.append(psutil.Process(pid).memory_info().rss)
    return sum(rss) / 2**20 if rss else None


def _control(kind: str, dep: dict[str, Any], j: int) -> tuple[bytes, bytes, list]:
    """Control message ``j`` of ``kind`` as (key, value, headers)."""
    from kafkaml_ray.ingest import ControlMessage, TopicRange

    target = dep["deployment_id"] if j % 2 == 0 else UNKNOWN_DEPLOYMENT
    ranges = [TopicRange(dep["topic"], 0, 0, 100)]
    key, value, headers = ControlMessage(target, ranges, "RAW", {**INPUT_CONFIG}).to_kafka()
    if kind == "brackets_100000":
        return key, b"[" * 100_000, []
    if kind == "non_ascii_header":
        return key, value, [("deployment_id", "١٢".encode())]
    if kind == "key_9_bytes":
        return b"\x00" * 8 + b"\x01", value, []
    return key, value, headers


def soak(settings: Any, client: Any, dep: dict[str, Any], args: Any) -> dict[str, Any]:
    """Deploy the inference, send the mixed stream, drain it, count what came of it."""
    from confluent_kafka import Producer

    from kafkaml_ray.ingest import get_format
    from kafkaml_ray.ingest.sinks import producer_config

    inp, out = (f"soak-{side}-{uuid.uuid4().hex[:6]}" for side in ("in", "out"))
    create_topic(settings, inp, args.partitions)
    inf = client.deploy_inference(dep["result_id"], inp, out, replicas=1)
    x, y = digits()
    encoded = [get_format("RAW", INPUT_CONFIG).encode(v)[0] for v in x]
    outputs = Outputs(settings, out, y)
    pids = _pids(settings, inf.id)
    ingress_pids = set(pids["ingress"])
    producer = Producer(producer_config(settings.bootstrap_servers, settings.kafka))
    sent: dict[str, set] = defaultdict(set)  # kind -> its (partition, offset)s
    failures: list[str] = []

    def delivered(kind: str):
        def cb(err, msg) -> None:
            if err is not None:
                failures.append(str(err))
            else:
                sent[kind].add((msg.partition(), msg.offset()))

        return cb

    total, duration = int(args.rate * args.minutes), args.minutes * 60.0
    n_ctrl = max(1, round(args.control * args.minutes))
    k = min(n_ctrl, max(len(CONTROL_POISON), round(n_ctrl * args.poison)))
    ctrl_poison = {int(j): i for i, j in enumerate(np.linspace(0, n_ctrl - 1, k).round())}
    junk_sizes = [n for n in range(1, 600) if n != len(encoded[0])]
    rng = np.random.default_rng(0)
    settle()
    log(f"soak: {total:,} inputs over {args.minutes:g} min, {n_ctrl} control messages")
    lag = LagSampler(settings, f"kafkaml-inference-{inf.id}", inp, args.partitions)
    t0, windows = lag.t0, []
    now_n = {"t": 0.0, "inputs": 0, "poison": 0, "control": 0, "predictions": 0, "dead": 0}
    last = dict(now_n)

    def close_window(now: float, phase: str) -> None:
        for kind in ("ingress", "listener"):
            if _rss_mib(pids[kind]) is None:  # restarted: find it again
                pids[kind] = _pids(settings, inf.id)[kind]
                ingress_pids.update(pids["ingress"])
        now_n.update(t=now - t0, predictions=outputs.pred.total(), dead=outputs.dead.total())
        d = {key: now_n[key] - last[key] for key in now_n}
        w = {"t_s": round(now_n["t"], 1), "phase": phase, **{k: d[k] for k in list(d)[1:]}}
        w["in_msgs_per_s"] = d["inputs"] / max(d["t"], 1e-9)
        w["out_msgs_per_s"] = (d["predictions"] + d["dead"]) / max(d["t"], 1e-9)
        w["max_lag"] = lag.lag(since=last["t"])
        w.update({f"rss_{k}_mib": _rss_mib(v) for k, v in pids.items()})
        windows.append(w)
        last.update(now_n)

    start_rss = {k: _rss_mib(v) for k, v in pids.items()}
    next_window, per_s = t0 + args.window, args.rate / 60.0
    while now_n["inputs"] < total or now_n["control"] < n_ctrl:
        now = time.monotonic()
        while (i := now_n["inputs"]) < min(total, int((now - t0) * per_s)):
            value, kind = encoded[i % len(x)], "good"
            if int((i + 1) * args.poison) > int(i * args.poison):  # evenly spread
                kind = INPUT_POISON[now_n["poison"] % len(INPUT_POISON)]
                value = {"empty": b"", "cut_255_bytes": value[:255]}.get(kind)
                value = rng.bytes(int(rng.choice(junk_sizes))) if value is None else value
                now_n["poison"] += 1
            cb = delivered("good" if kind == "good" else "poison")
            producer.produce(inp, value, str(i).encode(), on_delivery=cb)
            now_n["inputs"] += 1
        if (j := now_n["control"]) < n_ctrl and now - t0 >= (j + 0.5) * duration / n_ctrl:
            kind = CONTROL_POISON[ctrl_poison[j]] if j in ctrl_poison else "control"
            key, value, headers = _control(kind, dep, j)
            topic = settings.control_topic
            producer.produce(topic, value, key, headers=headers, on_delivery=delivered(kind))
            now_n["control"] += 1
        producer.poll(0)
        if now >= next_window:
            close_window(now, "stream")
            next_window += args.window
        time.sleep(0.005)
    producer.flush(60)
    if time.monotonic() - t0 - last["t"] > 1.0:  # (not a sliver of a window)
        close_window(time.monotonic(), "stream")
    next_window = time.monotonic() + args.window
    log(f"stream done: {now_n['inputs']:,} inputs, {now_n['control']} control; draining")
    drain_start = time.monotonic()
    while time.monotonic() - drain_start < args.drain:
        if set(outputs.pred) | set(outputs.dead) >= sent["good"] | sent["poison"]:
            break
        time.sleep(0.5)
        if time.monotonic() >= next_window:
            close_window(time.monotonic(), "drain")
            next_window += args.window
    drain_s = time.monotonic() - drain_start
    close_window(time.monotonic(), "drain")
    control = {o: k for k, offsets in sent.items() if k not in ("good", "poison") for o in offsets}
    for _ in range(60):  # the listener stores what it reads within a second or two
        ds = [
            d
            for d in client.list_datasources(check=False)
            if d.source_topic == settings.control_topic
        ]
        rows = {o: d for d in ds if (o := (d.source_partition, d.source_offset)) in control}
        if len(rows) >= len(control):
            break
        time.sleep(1.0)
    end_rss = {k: _rss_mib(v) for k, v in pids.items()}
    for _ in range(20):  # the replica writes its counts every 2 s
        if (info := client.get_inference(inf.id)).consumed >= total:
            break
        time.sleep(0.5)
    outputs.close()
    lag.close()
    client.delete_inference(inf.id)

    good, poison = sent["good"], sent["poison"]
    pred, dead = set(outputs.pred), set(outputs.dead)
    longest = stalled(lag.samples, args.partitions)
    t = {
        "good_sent": len(good),
        "poison_sent": len(poison),
        "predictions": outputs.pred.total(),
        "lost": len(good - pred),
        "lost_examples": sorted(good - pred)[:10],
        "dead_letters": outputs.dead.total(),
        "good_dead_lettered": len(good & dead),
        "poison_predicted": len(poison & pred),
        "duplicates": sum(c - 1 for c in (outputs.pred + outputs.dead).values()),
        "accuracy": outputs.correct / max(1, outputs.pred.total()),
        "stalled_partitions": sum(s >= STALL_S for s in longest),
        "longest_unmoved_with_lag_s": longest,
        "control_sent": len(control),
        "control_stored": len(rows),
        "control_statuses": dict(Counter(d.status for d in rows.values())),
        "control_poison_rows": [
            {"kind": k, "status": rows[o].status, "error": (rows[o].error or "")[:160]}
            for o, k in control.items()
            if k != "control" and o in rows
        ],
        "delivery_failures": len(failures),
        "drain_s": drain_s,
        "dead_letter_errors": dict(outputs.errors.most_common(6)),
        "replica_stats": {k: getattr(info, k) for k in ("consumed", "predicted", "dead_letters")},
        "ingress_processes": sorted(ingress_pids),
    }
    t["checks"] = {
        "no_input_lost": t["lost"] == 0,
        "dead_letters_equal_poison": dead == poison,  # the same offsets, none of the good
        "no_partition_stalled": t["stalled_partitions"] == 0,
        "all_control_stored": len(rows) == len(control) == n_ctrl,
    }
    lags = [[round(s, 1), sum(h) - sum(c)] for s, c, h in lag.samples]
    out = {"inference_id": inf.id, "input_topic": inp, "output_topic": out, "totals": t}
    rss = {"start": start_rss, "end": end_rss}
    return {**out, "windows": windows, "lag_samples": lags, "rss_mib": rss}


def run(args: Any) -> dict[str, Any]:
    facts = machine_facts()
    with local_stack(num_cpus=4) as settings:
        client, dep = train(settings, args.epochs)
        log(f"trained in {dep['wall_s']:.0f} s: {dep['test_metrics']}")
        result = soak(settings, client, dep, args)
    facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    options = ("minutes", "rate", "poison", "control", "partitions", "window")
    passed = all(result["totals"]["checks"].values())
    out = {"benchmark": "soak", **{k: getattr(args, k) for k in options}, "training": dep}
    return {**out, **result, "passed": passed, "machine": facts}


#: The window table: column, key, decimals (None: as it is).
COLUMNS = (
    ("t s", "t_s", 1), ("phase", "phase", None), ("inputs sent", "inputs", 0),
    ("poison", "poison", 0), ("control", "control", 0), ("predictions", "predictions", 0),
    ("dead letters", "dead", 0), ("in msgs/s", "in_msgs_per_s", 1),
    ("out msgs/s", "out_msgs_per_s", 1), ("max lag", "max_lag", 0),
    ("RSS ingress MiB", "rss_ingress_mib", 0), ("RSS listener MiB", "rss_listener_mib", 0),
    ("RSS Ray node MiB", "rss_node_mib", 0),
)  # fmt: skip


def markdown(r: dict[str, Any]) -> str:
    t, m, c = r["totals"], r["machine"], r["totals"]["checks"]
    rows = [[w[k] if d is None else num(w[k], d) for _, k, d in COLUMNS] for w in r["windows"]]
    head = " | ".join(name for name, _, _ in COLUMNS)
    unmoved = ", ".join(f"{s:.0f}" for s in t["longest_unmoved_with_lag_s"])
    unmoved = f"{t['stalled_partitions']} ({unmoved})"
    checks = [
        ("good inputs without a prediction (lost)", t["lost"], "0", c["no_input_lost"]),
        ("dead letters / poison inputs sent", f"{t['dead_letters']} / {t['poison_sent']}",
         "equal, same input offsets", c["dead_letters_equal_poison"]),
        ("stalled partitions (longest unmoved with lag, s)", unmoved,
         f"0 (under {STALL_S:.0f} s)", c["no_partition_stalled"]),
        ("control messages stored / sent", f"{t['control_stored']} / {t['control_sent']}",
         "all", c["all_control_stored"]),
    ]  # fmt: skip
    checks = [[*row[:3], "**pass**" if row[3] else "**FAIL**"] for row in checks]
    rss0, rss1 = r["rss_mib"]["start"], r["rss_mib"]["end"]
    rss = ", ".join(f"{k} {num(rss0[k])} -> {num(rss1[k])} MiB" for k in rss0)
    refused = "; ".join(
        f"{p['kind']}: {p['status']} (`{p['error'][:80]}`)" for p in t["control_poison_rows"]
    )
    errors = "; ".join(f"`{e}` x{n}" for e, n in t["dead_letter_errors"].items())
    s, tr = t["replica_stats"], r["training"]
    return f"""# Soak: a sustained mixed stream through the control listener and one inference

{r["minutes"]:g} min of RAW digits inputs at {r["rate"]:,} a minute ({r["poison"]:.0%} \
poison) into one inference (digits CNN, 1 replica, {r["partitions"]} input partitions), and \
{r["control"]:g} control messages a minute ({len(t["control_poison_rows"])} of them poison) to the \
control listener, on one embedded broker and Ray head; windows of {r["window"]:g} s, then a \
drain of {t["drain_s"]:.0f} s. Overall: **{"passed" if r["passed"] else "FAILED"}**.

{table(head, "rl" + "r" * (len(COLUMNS) - 2), rows)}

## Totals

{table("check | measured | aim | verdict", "lrll", checks)}

- Inputs: {t["good_sent"]:,} good and {t["poison_sent"]} poison sent, {t["predictions"]:,} \
predictions ({t["duplicates"]} duplicates: delivery is at least once), \
{t["good_dead_lettered"]} good inputs dead-lettered, {t["poison_predicted"]} poison ones \
predicted, accuracy {t["accuracy"]:.3f}, {t["delivery_failures"]} delivery failures. The \
replica's counts: {s["consumed"]:,} consumed, {s["predicted"]:,} predicted, \
{s["dead_letters"]} dead letters; ingress processes seen: {len(t["ingress_processes"])}.
- Dead letters' `error` headers: {errors or "none"}.
- Control messages stored as {t["control_statuses"]} (the well-formed ones name the \
finished training deployment, whose hand-over fails, or no deployment). Poison: \
{refused or "none"}.
- RSS at start -> end: {rss}.
- Trained first: {tr["epochs"]} epoch(s), {tr["wall_s"]:.0f} s, test metrics \
{ {k: round(v, 3) for k, v in tr["test_metrics"].items()} }.
- Lag: committed offsets against high watermarks, every second; with commits every 0.5 s it \
saws within half a second of the stream. Stalled: unmoved for {STALL_S:.0f} s while lagging.
- Noise: the {shared_machine(m)}. {versions(m, "ray", "confluent-kafka", "torch")}.

`python -m benchmarks.soak --minutes {r["minutes"]:g} --rate {r["rate"]} \
--poison {r["poison"]:g} --control {r["control"]:g} --partitions {r["partitions"]}`
"""


def plot(r: dict[str, Any], path: Path) -> None:
    with figure(path, (11, 3.6), columns=2) as (ax1, ax2):
        ts = [0.0, *(w["t_s"] for w in r["windows"])]
        series = {"inputs sent": "in_msgs_per_s", "predictions + DLQ": "out_msgs_per_s"}
        for label, key in series.items():  # each window's rate drawn over the window
            v = [w[key] for w in r["windows"]]
            ax1.step(ts, [v[0], *v], where="pre", label=label)
        ax1.set_ylabel(f"messages / s (per {r['window']:g} s window)")
        ax1.set_title("Throughput held over time")
        lag = np.asarray(r["lag_samples"] or [[0, 0]], dtype=float)
        ax2.plot(lag[:, 0], lag[:, 1], color="tab:red", lw=1, label="lag")
        ax2.set_ylabel("consumer lag, messages (committed)")
        ax2.set_title("Inference consumer lag, every second")
        for ax in (ax1, ax2):
            ax.axvline(r["minutes"] * 60, color="gray", ls=":", lw=1, label="stream ends")
            ax.set_xlabel("seconds")
            ax.legend(fontsize=8)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--minutes", type=float, default=3.0)
    parser.add_argument("--rate", type=int, default=3000, help="inputs a minute")
    parser.add_argument("--poison", type=float, default=0.01, help="share of poison")
    parser.add_argument("--control", type=float, default=6.0, help="control messages a minute")
    parser.add_argument("--partitions", type=int, default=2, help="of the input topic")
    parser.add_argument("--window", type=float, default=15.0, help="seconds")
    parser.add_argument("--drain", type=float, default=120.0, help="seconds at most")
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    write_results(args.out, "soak", result := run(args), markdown, plot)
    if not result["passed"]:
        raise SystemExit(1)


if __name__ == "__main__":
    main()
