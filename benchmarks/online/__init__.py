"""Online training: ours against a plain loop, a concept drift, and publish to serve.

One run, one embedded broker and Ray head (`local_stack`), the example digits CNN
(``digits-cnn-pytorch``, registered through the library), scikit-learn's digits (float32 8x8,
int64 labels) repeated to ``windows x 256`` messages, the labels of the second half remapped
``y -> (y + 1) % 10`` (the drift). The stream is sent once to a 1-partition topic; every run
below reads all of it from offset 0, in windows of 256 messages, batch size 32, 1 epoch per
window, no validation share (the whole window trains).

1. **Trained throughput.** **ours**: an online deployment (``max_windows`` = the stream's
   windows, so it ends with the last one), started by an incremental control message naming
   ``topic:0:0`` and read by the control listener, as ``kafkaml-ray up`` runs it; the run
   scores each window, trains on it and publishes versions (accuracy up by 0.01); it
   checkpoints and records the windows every second. **plain**: one fresh process (spawned;
   torch's threads set to what a 1-CPU Ray worker gets, as ours runs in one) with a
   confluent-kafka consumer reading the same topic in windows of the same size, decoding with
   ``np.frombuffer`` and calling the same train step per window: the PyTorch adapter's
   learner (`frameworks.torch.TorchLearner`): ``score`` then ``fit`` (built from a `RunSpec`
   as the online run builds it). The rate is messages of windows
   2..N over the time from the end of window 1 to the end of window N (ours: the windows'
   ``created_at`` in the store, when each was trained; plain: the clock after each window),
   so start-up is left out
   of both; ``ratio`` = ours / plain (medians over ``repeat`` rounds, the order alternating).
   From start: all messages over the time from the control message (ours) or the process's
   first line (plain: before importing torch) to the last window.
2. **Drift.** Prequential accuracy (each window scored before training on it) per window of
   ours (the first round), of the plain loop (the same steps: the curves should agree), and of
   **static**: the same model trained once on the first half (plain learner, the same 1 epoch
   over it) and then only scored on the later windows. Reported: the windows of drifted data
   ours trains on before a window scores >= 0.9 again.
3. **Publish to serve.** Another online deployment (windows of 128 messages, improvement 0, so
   most windows publish) fed 128 digits every 2 s, and an inference deployed with
   ``follow=True`` on it fed inputs at a steady rate. For each version published after the
   inference's first output: from when its window was trained (``OnlineWindow.created_at``;
   the version is recorded at the checkpoint after it) to the Kafka timestamp of
   the first output whose ``kafkaml-model-version`` header is that version (a version
   superseded before a replica looked is counted apart; ``delay_ge_s`` takes the first output
   of that version or a newer one instead).

    python -m benchmarks.online [--size small|full] [--out benchmarks/results]
"""

from __future__ import annotations

import argparse
import os
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks._common import (
    create_topic,
    digits,
    local_stack,
    log,
    machine_facts,
    produce_digits,
    settle,
    summary,
)
from benchmarks._report import write_results
from benchmarks.online.plain import BATCH, EPOCHS, MODEL, WINDOW, fresh, plain_online, static_model
from benchmarks.online.report import AIM_P99_S, AIM_RATIO, RECOVERED, markdown, plot
from benchmarks.train.ours import (
    PRODUCED_TOPIC,
    announce,
    client_with_listener,
    ray_worker_threads,
)

__all__ = ["main", "run", "recovery", "SIZES"]

#: windows of the stream (half before the drift), rounds of the throughput comparison, and
#: the publish-to-serve part: seconds, inputs a second, 128 training messages every feed_s.
SIZES = {
    "small": {"windows": 48, "repeat": 5, "serve_s": 40, "input_rate": 50, "feed_s": 2.0},
    "full": {"windows": 128, "repeat": 5, "serve_s": 120, "input_rate": 50, "feed_s": 2.0},
}
SERVE_WINDOW = 128


def _epoch(t: datetime) -> float:
    """A store time (naive UTC) as seconds since the epoch."""
    return t.replace(tzinfo=UTC).timestamp()


# -- ours ---------------------------------------------------------------------------------
def _online(**overrides: Any) -> dict[str, Any]:
    return {
        "window_messages": WINDOW,
        "window_seconds": 60,
        "stream_timeout_s": 60,
        "validation_rate": 0.0,
        "monitoring_metric": "accuracy",
        "change": "up",
        "improvement": 0.01,
        **overrides,
    }


def run_ours(client: Any, config_id: int, msg: Any, windows: int) -> dict[str, Any]:
    """An online deployment of ``windows`` windows, started by ``msg`` (an incremental control
    message naming the stream from offset 0); its windows and versions from the store."""
    dep = client.deploy_training(
        config_id, batch_size=BATCH, kwargs=f"epochs={EPOCHS}", online=_online(max_windows=windows)
    )
    announce(client.settings, msg, dep.id)
    start = time.time()
    r = client.wait_for_deployment(dep.id, timeout=900).results[0]
    if r.status != "finished":
        raise RuntimeError(f"online run {r.id}: {r.status}: {r.error}")
    rows = [
        {
            "t": _epoch(w.created_at),
            "messages": w.messages,
            "prequential": w.prequential,
            "train": w.train,
            "version": w.version,
        }
        for w in client.list_windows(r.id)
    ]
    return {
        "result_id": r.id,
        "start": start,
        "windows": rows,
        "versions": len(client.list_versions(r.id)),
        "ended": (r.progress or {}).get("ended"),
    }


def _rates(side: dict[str, Any]) -> dict[str, float]:
    """Messages/s of windows 2..N (from the end of window 1), and of all from the start."""
    w = side["windows"]
    steady_s = w[-1]["t"] - w[0]["t"]
    return {
        "steady_msgs_per_s": sum(r["messages"] for r in w[1:]) / steady_s,
        "steady_s": steady_s,
        "from_start_msgs_per_s": sum(r["messages"] for r in w) / (w[-1]["t"] - side["start"]),
        "from_start_s": w[-1]["t"] - side["start"],
        "window_s": summary([b["t"] - a["t"] for a, b in zip(w, w[1:], strict=False)]),
    }


def recovery(curve: list[float], drift_window: int, level: float = RECOVERED) -> int | None:
    """Windows of drifted data trained on before a window scores >= ``level`` again (windows
    numbered from 1; ``drift_window`` the first drifted one); None: not within the stream."""
    for k in range(drift_window, len(curve) + 1):
        if curve[k - 1] >= level:
            return k - drift_window
    return None


# -- publish to serve ---------------------------------------------------------------------
class _Outputs:
    """Reads the output topic from its start in a thread: per version, its first output's
    Kafka timestamp (ms)."""

    def __init__(self, settings: Any, topic: str):
        from confluent_kafka import Consumer, TopicPartition

        group = f"online-bench-{uuid.uuid4().hex[:8]}"
        self.consumer = Consumer(
            settings.kafka_config(**{"group.id": group, "enable.auto.commit": False})
        )
        self.consumer.assign([TopicPartition(topic, 0, 0)])
        self.first: dict[int, int] = {}
        self.count, self.unversioned = 0, 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)
        self._thread.start()

    def _run(self) -> None:
        while not self._stop.is_set():
            for m in self.consumer.consume(num_messages=1000, timeout=0.2):
                if m.error() is not None:
                    continue
                self.count += 1
                version = dict(m.headers() or ()).get("kafkaml-model-version")
                if version is None:
                    self.unversioned += 1
                    continue
                v, ts = int(version), m.timestamp()[1]
                self.first[v] = min(self.first.get(v, ts), ts)

    def close(self) -> None:
        self._stop.set()
        self._thread.join(10)
        self.consumer.close()


def publish_to_serve(client: Any, config_id: int, size: dict[str, Any]) -> dict[str, Any]:
    """An online run fed a little at a time, an inference following it fed at a steady rate:
    per published version, the delay to its first output."""
    from confluent_kafka import Producer

    from kafkaml_ray.ingest import RawSink

    settings = client.settings
    dep = client.deploy_training(
        config_id,
        batch_size=BATCH,
        kwargs=f"epochs={EPOCHS}",
        online=_online(
            window_messages=SERVE_WINDOW, window_seconds=5, stream_timeout_s=-1, improvement=0.0
        ),
    )
    rid = dep.results[0].id
    tag = uuid.uuid4().hex[:6]
    train_topic, inp, out = f"serve-train-{tag}", f"serve-in-{tag}", f"serve-out-{tag}"
    for topic in (train_topic, inp):
        create_topic(settings, topic, 1)
    x, y = digits()
    sink = RawSink(
        settings.bootstrap_servers,
        train_topic,
        dep.id,
        online=True,
        control_topic=settings.control_topic,
    )
    sink.send_many(x[:SERVE_WINDOW], y[:SERVE_WINDOW])  # the control message, then data
    deadline = time.monotonic() + 300
    while not client.list_versions(rid):
        if time.monotonic() > deadline:
            raise TimeoutError(f"online result {rid}: no version 1 after 300 s")
        time.sleep(0.5)
    started = time.monotonic()
    inf = client.deploy_inference(rid, inp, out, follow=True, replicas=1)
    deploy_s = time.monotonic() - started
    outputs = _Outputs(settings, out)
    producer = Producer(settings.kafka_config(**{"linger.ms": 0}))
    settle()
    log(f"publish to serve: inference {inf.id} up in {deploy_s:.0f} s; {size['serve_s']} s of data")
    t0 = time.monotonic()
    sent, fed, first_output = 0, 1, None
    while (now := time.monotonic()) - t0 < size["serve_s"]:
        while sent < int((now - t0) * size["input_rate"]):
            producer.produce(inp, x[sent % len(x)].tobytes(), str(sent).encode())
            sent += 1
        if now - t0 >= fed * size["feed_s"]:
            lo = (fed * SERVE_WINDOW) % (len(x) - SERVE_WINDOW)
            sink.send_many(x[lo : lo + SERVE_WINDOW], y[lo : lo + SERVE_WINDOW])
            fed += 1
        if first_output is None and outputs.count:
            first_output = time.time()
        producer.poll(0)
        time.sleep(0.005)
    producer.flush(30)
    sink.close()
    time.sleep(3.0)  # the outputs of the last inputs
    outputs.close()
    client.stop_training(dep.id)
    published = client.list_versions(rid)
    trained = {w.window: _epoch(w.created_at) for w in client.list_windows(rid)}
    client.delete_inference(inf.id)
    first_output = first_output or time.time()
    rows = []
    for v in published:
        created = trained[v.window]  # (it is recorded at the checkpoint after)
        exact = outputs.first.get(v.version)
        newer = [ts for ver, ts in outputs.first.items() if ver >= v.version]
        rows.append(
            {
                "version": v.version,
                "window": v.window,
                "created": created,
                "after_first_output": created > first_output,
                "delay_s": None if exact is None else exact / 1000 - created,
                "delay_ge_s": min(newer) / 1000 - created if newer else None,
            }
        )
    counted = [r for r in rows if r["after_first_output"]]
    delays = [r["delay_s"] for r in counted if r["delay_s"] is not None]
    delays_ge = [r["delay_ge_s"] for r in counted if r["delay_ge_s"] is not None]

    def pct(values: list[float]) -> dict[str, float | None]:
        if not values:
            return {"p50": None, "p99": None, "max": None}
        p50, p99 = np.percentile(values, [50, 99])
        return {"p50": float(p50), "p99": float(p99), "max": max(values)}

    return {
        "result_id": rid,
        "inference_id": inf.id,
        "deploy_inference_s": deploy_s,
        "inputs_sent": sent,
        "outputs": outputs.count,
        "unversioned_outputs": outputs.unversioned,
        "training_messages": fed * SERVE_WINDOW,
        "versions_published": len(published),
        "versions_counted": len(counted),
        "versions_served": len(delays),
        "versions_superseded_unserved": len(counted) - len(delays),
        "versions_served_total": sorted(outputs.first),
        "delay_s": pct(delays),
        "delay_ge_s": pct(delays_ge),
        "versions": rows,
    }


# -- the run ------------------------------------------------------------------------------
def run(size_name: str) -> dict[str, Any]:
    import dataclasses

    from kafkaml_ray.demo import EXAMPLES, EXAMPLES_DIR, register_examples
    from kafkaml_ray.ingest import TopicRange
    from kafkaml_ray.ingest.listener import stop_listener

    size = SIZES[size_name]
    facts = machine_facts()
    n = size["windows"] * WINDOW
    x, y = digits(n)
    y = y.copy()
    y[n // 2 :] = (y[n // 2 :] + 1) % 10  # the drift
    drift_window = n // 2 // WINDOW + 1
    code = (EXAMPLES_DIR / EXAMPLES[MODEL][1]).read_text()
    ours: list[dict] = []
    plain: list[dict] = []
    started = time.perf_counter()
    with local_stack(num_cpus=4) as settings:
        cluster_start_s = time.perf_counter() - started
        threads = ray_worker_threads()
        client = client_with_listener(settings)
        model = register_examples(client, [MODEL])[MODEL]
        config = client.create_configuration(f"online-{uuid.uuid4().hex[:6]}", [model])
        topic = f"online-drift-{uuid.uuid4().hex[:6]}"
        batch = produce_digits(settings, topic, x, y, 1, control_topic=PRODUCED_TOPIC)
        msg = dataclasses.replace(
            batch, ranges=[TopicRange(topic, 0, 0, 0)], total_msg=None, incremental=True
        )
        log(f"stream: {n:,} messages, drift at window {drift_window}; threads {threads}")
        for i in range(size["repeat"]):
            for side in ("ours", "plain") if i % 2 == 0 else ("plain", "ours"):
                settle()
                if side == "ours":
                    ours.append(run_ours(client, config.id, msg, size["windows"]))
                else:
                    with fresh() as pool:
                        args = (settings, code, topic, size["windows"], threads["torch_threads"])
                        plain.append(pool.submit(plain_online, *args).result())
                log(f"round {i + 1} {side}: {_rates((ours if side == 'ours' else plain)[-1])}")
        with fresh() as pool:
            static = pool.submit(static_model, settings, code, x, y, threads["torch_threads"])
            static = static.result()
        serve = publish_to_serve(client, config.id, size)
        stop_listener(settings)
    facts["load_average_1m_at_end"] = round(os.getloadavg()[0], 2)
    out = results(size_name, size, ours, plain, static, serve, drift_window, threads, facts)
    return {**out, "cluster_start_s": cluster_start_s}


def _curve(side: dict[str, Any]) -> list[float]:
    return [w["prequential"].get("accuracy", float("nan")) for w in side["windows"]]


def results(size_name, size, ours, plain, static, serve, drift_window, threads, facts) -> dict:
    rates = {"ours": [_rates(r) for r in ours], "plain": [_rates(r) for r in plain]}
    med = {
        side: {
            k: summary([r[k] for r in rs])
            for k in ("steady_msgs_per_s", "from_start_msgs_per_s", "from_start_s")
        }
        for side, rs in rates.items()
    }
    ratio = med["ours"]["steady_msgs_per_s"]["median"] / med["plain"]["steady_msgs_per_s"]["median"]
    ratio_start = (
        med["ours"]["from_start_msgs_per_s"]["median"]
        / med["plain"]["from_start_msgs_per_s"]["median"]
    )
    curves = {"ours": _curve(ours[0]), "plain": _curve(plain[0])}
    static_curve = [w.get("accuracy", float("nan")) for w in static["windows"]]
    after = curves["ours"][drift_window - 1 :]
    p99 = serve["delay_s"]["p99"]
    return {
        "benchmark": "online",
        "size": size_name,
        **size,
        "window_messages": WINDOW,
        "batch_size": BATCH,
        "epochs": EPOCHS,
        "model": MODEL,
        "messages": size["windows"] * WINDOW,
        "drift_window": drift_window,
        "ray_worker_threads": threads,
        "throughput": {
            **med,
            "ratio": ratio,
            "ratio_from_start": ratio_start,
            "aim_met": ratio >= AIM_RATIO,
            "rounds": rates,
            "ours_versions": [r["versions"] for r in ours],
            "plain_threads": plain[0]["threads"],
        },
        "drift": {
            "ours": curves["ours"],
            "plain": curves["plain"],
            "ours_all_rounds": [_curve(r) for r in ours],
            "static": static_curve,
            "static_first_window": static["first_window"],
            "before_drift_ours": curves["ours"][drift_window - 2],
            "windows_to_recover": recovery(curves["ours"], drift_window),
            "windows_after_drift": len(after),
            "ours_mean_after_drift": float(np.mean(after)),
            "static_mean_after_drift": float(np.mean(static_curve)),
            "ours_minus_plain_max_abs": float(
                np.nanmax(np.abs(np.subtract(curves["ours"], curves["plain"])))
            ),
        },
        "serve": {**serve, "aim_met": p99 is not None and p99 < AIM_P99_S},
        "runs": {"ours": ours, "plain": plain, "static": static},
        "machine": facts,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.online", description=__doc__.split("\n\n")[0]
    )
    parser.add_argument("--size", choices=sorted(SIZES), default="small")
    parser.add_argument("--out", type=Path, default=Path("benchmarks/results"))
    args = parser.parse_args(argv)
    write_results(args.out, "online", run(args.size), markdown, plot)
