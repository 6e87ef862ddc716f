"""What the commands and the demo print: tables, the stack's parts, metrics, deployments and
their results, and live progress bars."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from typing import Any

__all__ = ["table", "parts_text", "metrics_text", "deployment_text", "results_table", "follow"]


def table(rows: Iterable[Sequence[Any]], header: Sequence[str]) -> str:
    """A plain text table."""
    cells = [[str(c) for c in header]] + [["" if c is None else str(c) for c in r] for r in rows]
    if len(cells) == 1:
        return "(none)"
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def parts_text(parts) -> str:
    return table(
        [(p.name, "running" if p.running else "stopped", p.address, p.detail) for p in parts],
        ["part", "state", "address", "detail"],
    )


def metrics_text(m: dict) -> str:
    """Numeric metrics as `name=value`, sorted by name."""
    return ", ".join(f"{k}={v:.4g}" for k, v in sorted(m.items()) if isinstance(v, int | float))


def deployment_text(d) -> str:
    head = (
        f"deployment {d.id} of configuration {d.configuration_name!r}: batch size {d.batch_size}"
        f", GPU per model {d.gpu_fraction:g}, datasource {d.datasource_id or '(waiting)'}"
        + (f", Ray job {d.job_id}" if d.job_id else "")
    )
    waits = [f"result {r.id}: {r.progress['waiting']}" for r in d.results if _waiting(r)]
    return "\n".join([head, results_table(d.results), *waits])


def _waiting(r) -> bool:
    return r.status == "training" and bool((r.progress or {}).get("waiting"))


def results_table(results) -> str:
    return table(
        [
            (
                r.id,
                r.model_name,
                r.framework,
                r.status,
                metrics_text(r.train_metrics),
                metrics_text(r.val_metrics),
                metrics_text(r.test_metrics),
                f"{r.training_time_s:.1f}s" if r.training_time_s else "",
                (r.error or "")[:120],
            )
            for r in results
        ],
        ["result", "model", "framework", "status", "train", "validation", "test", "time", "error"],
    )


def follow(client, deployment_id: int, interval: float = 0.5):
    """Show a progress bar per model of a deployment until every model is done; return it."""
    import time

    from tqdm.auto import tqdm

    dep = client.get_deployment(deployment_id)
    bars = {
        r.id: tqdm(total=1, desc=r.model_name, position=i, leave=True, unit="batch")
        for i, r in enumerate(dep.results)
    }
    said: dict[int, str] = {}
    while True:
        dep = client.get_deployment(deployment_id)
        for r in dep.results:
            bar, p = bars[r.id], r.progress or {}
            if _waiting(r) and said.get(r.id) != p["waiting"]:
                said[r.id] = p["waiting"]
                tqdm.write(f"{r.model_name}: {p['waiting']}")
            epochs, batches = p.get("epochs") or 1, p.get("batches") or 1
            epoch, batch = p.get("epoch") or 0, p.get("batch")
            done = (epoch - (0 if batch is None else 1)) * batches + (batch or 0)
            bar.total = epochs * batches
            bar.n = bar.total if r.status == "finished" else min(done, bar.total)
            bar.set_description(f"{r.model_name} [{r.status}] epoch {epoch}/{epochs}")
            bar.set_postfix_str(metrics_text(p.get("metrics") or {}) or p.get("phase", ""))
            bar.refresh()
        if dep.done:
            break
        time.sleep(interval)
    for bar in bars.values():
        bar.close()
    return dep
