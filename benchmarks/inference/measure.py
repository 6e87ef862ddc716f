"""The measurements of started pipelines: the warm-up that checks the predictions, a backlog
drained (throughput), latency at a fixed offered load (the rounds of a load pooled, the p50
difference between two pipelines with its interval), concurrent 256-sample requests, and
the CPU the pipelines use while idle."""

from __future__ import annotations

import contextlib
import json
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from benchmarks.inference.loops import IDX_HEADER, REQ_HEADER, TS_HEADER
from benchmarks.inference.pipelines import REQUEST, Pipeline

__all__ = [
    "warm_up",
    "throughput",
    "at_load",
    "pooled",
    "p50_difference",
    "request_grid",
    "idle_cores",
]


# -- sending -------------------------------------------------------------------------------
def _send(p: Pipeline, x: np.ndarray, n: int, extra: Callable[[int], list] | None = None) -> None:
    """Send ``n`` samples (cycling through ``x``), each stamped with its send time."""
    for _ in range(n):
        i = p.sent
        p.sent += 1
        headers = [(TS_HEADER, str(time.time_ns()).encode())]
        if extra is not None:
            headers += extra(i)
        p.producer.send(x[i % len(x)], key=str(i).encode(), headers=headers)


def _percentiles(values_ms: np.ndarray) -> dict[str, float]:
    if not len(values_ms):
        return {}
    return {
        "p50_ms": float(np.percentile(values_ms, 50)),
        "p99_ms": float(np.percentile(values_ms, 99)),
        "mean_ms": float(values_ms.mean()),
        "max_ms": float(values_ms.max()),
    }


# -- measurements --------------------------------------------------------------------------
def warm_up(p: Pipeline, x: np.ndarray, n: int) -> dict[str, Any]:
    """Send ``n`` samples tagged with their index; wait for every output; return the
    predictions by index (``None`` for echo, which returns the inputs: checked here)."""
    c = p.collector
    mark, start = c.mark(), time.perf_counter()
    c.capture = True
    first = p.sent
    _send(p, x, n, lambda i: [(IDX_HEADER, str(i - first).encode())])
    if not c.wait(mark + n, timeout=300):
        raise TimeoutError(f"{p.side}/{p.model}: {c.mark() - mark} of {n} warm-up outputs")
    c.capture = False
    seconds = time.perf_counter() - start
    got = [c.captured[i] for i in range(n)]
    c.captured = {}
    idx = (first + np.arange(n)) % len(x)
    if p.side == "echo":
        if got != [np.asarray(x[i], dtype=np.float32).tobytes() for i in idx]:
            raise AssertionError("echo returned other bytes than were sent")
        return {"seconds": seconds, "predictions": None, "index": idx}
    preds = np.asarray([json.loads(v)["values"] for v in got], dtype=np.float64)
    return {"seconds": seconds, "predictions": preds, "index": idx}


def _cpu_seconds(pids: list[int]) -> float:
    import psutil

    total = 0.0
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            t = psutil.Process(pid).cpu_times()
            total += t.user + t.system
    return total


def _busy_snapshot() -> tuple[int, int]:
    fields = [int(v) for v in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    return sum(fields), fields[3] + fields[4]


def _produce_backlog(p: Pipeline, x: np.ndarray, n: int, stamp: int) -> None:
    """``n`` messages as fast as Python can queue them: values encoded once by the
    `InferenceProducer`'s format, one send stamp for all, a plain producer (the library's
    `producer_config`, ``linger.ms=5``): far faster than ours or the baseline, so their
    backlog is there before they have drained much of it (echo keeps up with it)."""
    if len(p.encoded) != len(x):
        p.encoded = [p.producer.format.encode(v)[0] for v in x]
    headers = [(TS_HEADER, str(stamp).encode())]
    produce, topic, values = p.fast.produce, p.input_topic, p.encoded
    for _ in range(n):
        i = p.sent
        p.sent += 1
        while True:
            try:
                produce(topic, values[i % len(values)], str(i).encode(), headers=headers)
                break
            except BufferError:
                p.fast.poll(0.01)
    p.fast.poll(0)


def throughput(p: Pipeline, x: np.ndarray, n: int) -> dict[str, Any]:
    """Produce a backlog of ``n`` messages; seconds from the first send to the n-th output."""
    c = p.collector
    pids = [pid for v in p.pids.values() for pid in v]
    cpu0, busy0 = _cpu_seconds(pids), _busy_snapshot()
    driver0 = time.process_time()
    mark = c.mark()
    t0 = time.time_ns()
    _produce_backlog(p, x, n, t0)
    produce_s = (time.time_ns() - t0) / 1e9
    if not c.wait(mark + n, timeout=max(120.0, n / 50)):
        raise TimeoutError(f"{p.side}/{p.model}: {c.mark() - mark} of {n} outputs")
    seconds = (c.recv[mark + n - 1] - t0) / 1e9
    cpu1, busy1 = _cpu_seconds(pids), _busy_snapshot()
    wall = (time.time_ns() - t0) / 1e9
    return {
        "messages": n,
        "seconds": seconds,
        "msgs_per_s": n / seconds,
        "produce_s": produce_s,
        "pipeline_cores": (cpu1 - cpu0) / wall,
        "driver_cores": (time.process_time() - driver0) / wall,
        "machine_busy": 1 - (busy1[1] - busy0[1]) / max(1, busy1[0] - busy0[0]),
    }


def at_load(p: Pipeline, x: np.ndarray, rate: float, seconds: float) -> dict[str, Any]:
    """Send at ``rate`` messages/s for ``seconds``; latency of every message."""
    c = p.collector
    n = max(1, int(rate * seconds))
    mark = c.mark()
    t0 = time.perf_counter()
    sent = 0
    while sent < n:
        due = min(n, int((time.perf_counter() - t0) * rate) + 1)
        if due > sent:
            _send(p, x, due - sent)
            sent = due
        else:
            time.sleep(max(0.0, min(0.002, sent / rate - (time.perf_counter() - t0))))
    offered_s = time.perf_counter() - t0
    drained = c.wait(mark + n, timeout=max(120.0, n / 50))
    end = c.mark()
    sent_ns = np.asarray(c.sent[mark:end], dtype=np.int64)
    recv_ns = np.asarray(c.recv[mark:end], dtype=np.int64)
    broker_ms = np.asarray(c.broker[mark:end], dtype=np.float64)
    e2e = (recv_ns - sent_ns) / 1e6
    broker = broker_ms - sent_ns / 1e6
    span = (recv_ns.max() - sent_ns.min()) / 1e9 if len(recv_ns) else float("nan")
    return {
        "offered_msgs_per_s": rate,
        "sent": n,
        "received": int(end - mark),
        "drained": drained,
        "send_s": offered_s,
        "delivered_msgs_per_s": (end - mark) / span if span else float("nan"),
        **_percentiles(e2e),
        "broker": _percentiles(broker),
        "_e2e_ms": e2e,
        "_broker_ms": broker,
    }


def pooled(rounds: list[dict[str, Any]]) -> dict[str, Any]:
    """The rounds of one load taken as one: percentiles over all their messages, the
    per-round p50s beside them."""
    e2e = np.concatenate([r.pop("_e2e_ms") for r in rounds])
    broker = np.concatenate([r.pop("_broker_ms") for r in rounds])
    return {
        "offered_msgs_per_s": rounds[0]["offered_msgs_per_s"],
        "sent": sum(r["sent"] for r in rounds),
        "received": sum(r["received"] for r in rounds),
        "drained": all(r["drained"] for r in rounds),
        "delivered_msgs_per_s": float(np.median([r["delivered_msgs_per_s"] for r in rounds])),
        **_percentiles(e2e),
        "broker": _percentiles(broker),
        "round_p50_ms": [r.get("p50_ms") for r in rounds],
    }


def p50_difference(
    ours: list[dict[str, Any]], base: list[dict[str, Any]], n: int = 2000, seed: int = 0
) -> dict[str, float]:
    """p50(ours) - p50(baseline), ms, over the messages of all rounds, with a 95% interval
    from a two-level bootstrap: the round pairs (measured back to back) drawn again, then the
    messages within each drawn round, so that both the drift of the machine between rounds
    and the spread within a round count."""
    rng = np.random.default_rng(seed)
    a, b = [r["_e2e_ms"] for r in ours], [r["_e2e_ms"] for r in base]
    k = min(len(a), len(b))
    diffs = np.empty(n)
    for i in range(n):
        pick = rng.integers(0, k, k)
        da = np.concatenate([rng.choice(a[j], len(a[j])) for j in pick])
        db = np.concatenate([rng.choice(b[j], len(b[j])) for j in pick])
        diffs[i] = np.median(da) - np.median(db)
    low, high = np.percentile(diffs, [2.5, 97.5])
    point = np.median(np.concatenate(a)) - np.median(np.concatenate(b))
    return {"ms": float(point), "ci95_low_ms": float(low), "ci95_high_ms": float(high)}


def request_grid(p: Pipeline, x: np.ndarray, clients: int, requests: int) -> dict[str, Any]:
    """``clients`` threads, each sending ``requests`` 256-sample requests one after the other
    and waiting for all 256 predictions of each; latency per request."""
    c = p.collector
    latencies: list[float] = []
    lock = threading.Lock()
    errors: list[str] = []

    def client(k: int) -> None:
        for j in range(requests):
            req = f"{k}.{j}.{uuid.uuid4().hex[:8]}"
            entry = c.expect(req, REQUEST)
            t0 = time.time_ns()
            with lock:
                _send(p, x, REQUEST, lambda _i, req=req: [(REQ_HEADER, req.encode())])
            if not entry[1].wait(600):
                errors.append(f"request {req}: {entry[0]} predictions missing")
                return
            with lock:
                latencies.append((entry[2] - t0) / 1e6)

    start = time.perf_counter()
    threads = [threading.Thread(target=client, args=(k,)) for k in range(clients)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - start
    if errors:
        raise TimeoutError(f"{p.side}: {errors[0]}")
    lat = np.asarray(latencies)
    return {
        "clients": clients,
        "requests": len(lat),
        "avg_ms": float(lat.mean()),
        "p50_ms": float(np.percentile(lat, 50)),
        "max_ms": float(lat.max()),
        "msgs_per_s": clients * requests * REQUEST / wall,
    }


def idle_cores(pipes: dict[str, Pipeline], seconds: float = 3.0) -> float:
    """CPU the started pipelines use while nothing is sent (polling, stats, health checks)."""
    pids = [pid for p in pipes.values() for v in p.pids.values() for pid in v]
    before = _cpu_seconds(pids)
    time.sleep(seconds)
    return (_cpu_seconds(pids) - before) / seconds
