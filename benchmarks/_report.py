"""What the benchmarks' reports share: the ``<name>.json`` + ``<name>.md`` + ``<name>.png`` a
run writes, the figure a plot draws on, Markdown tables, numbers as the tables show them, and
the lines of a report that say which machine and libraries the numbers come from."""

from __future__ import annotations

import contextlib
import json
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

__all__ = [
    "write_json",
    "write_results",
    "figure",
    "table",
    "num",
    "median_range",
    "met",
    "load",
    "shared_machine",
    "versions",
]


def write_json(path: Path, data: dict[str, Any]) -> None:
    """``data`` as indented JSON (NumPy numbers as floats)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(data, indent=2, default=float) + "\n")


def write_results(
    out: Path,
    name: str,
    result: dict[str, Any],
    markdown: Callable[[dict[str, Any]], str],
    plot: Callable[[dict[str, Any], Path], None] | None = None,
) -> None:
    """Write ``result`` to ``out``: ``name.json``, its Markdown report ``name.md`` and, with
    ``plot``, ``name.png``; print the report."""
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / f"{name}.json", result)
    text = markdown(result)
    (out / f"{name}.md").write_text(text)
    if plot is not None:
        plot(result, out / f"{name}.png")
    print(text)


@contextlib.contextmanager
def figure(path: Path, figsize: tuple[float, float], columns: int = 1) -> Iterator[Any]:
    """A row of ``columns`` matplotlib axes (one `Axes` for one column, else an array of
    them) on a ``figsize`` figure at 100 dpi, saved to ``path`` (Agg, tight layout) when the
    block ends."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, columns, figsize=figsize, dpi=100)
    try:
        yield axes
        fig.tight_layout()
        fig.savefig(path)
    finally:
        plt.close(fig)


def table(header: str, align: str, rows: Iterable[Sequence[Any]]) -> str:
    """A Markdown table: ``header`` its column names between `` | ``, ``align`` a letter per
    column, ``l`` (left) or ``r`` (right); a row is a sequence of cells, shown with `str`."""
    lines = [
        f"| {header} |",
        "|" + "".join("---:|" if a == "r" else "---|" for a in align),
    ]
    lines += ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]
    return "\n".join(lines)


def num(v: float | None, digits: int = 0, grouped: bool = True) -> str:
    """``v`` with ``digits`` decimals (thousands separated when ``grouped``); ``-`` for
    None or NaN."""
    if v is None or v != v:
        return "-"
    return f"{v:{',' if grouped else ''}.{digits}f}"


def median_range(
    s: dict[str, Any], digits: int = 0, grouped: bool = True, bold: bool = False
) -> str:
    """``median (min-max)`` of a `benchmarks._common.summary`, the median in bold when
    ``bold``."""
    med = num(s["median"], digits, grouped)
    return (
        f"{f'**{med}**' if bold else med} "
        f"({num(s['min'], digits, grouped)}-{num(s['max'], digits, grouped)})"
    )


def met(aim: bool) -> str:
    """An aim's verdict, in bold."""
    return "**met**" if aim else "**not met**"


def load(m: dict[str, Any]) -> str:
    """The machine's 1-minute load at the start and the end of the run."""
    return (
        f"1-minute load {m['load_average_1m_at_start']} at start, "
        f"{m['load_average_1m_at_end']} at end"
    )


def shared_machine(m: dict[str, Any]) -> str:
    """``machine (cores, CPU, memory) was shared with other jobs (its load)``."""
    return (
        f"machine ({m['cores']} cores, {m['cpu']}, {m['memory']}) was shared with other jobs "
        f"({load(m)})"
    )


def versions(m: dict[str, Any], *libraries: str) -> str:
    """``Python 3.x, ray 2.y, ...``: Python's and ``libraries``' versions."""
    return ", ".join([f"Python {m['python']}", *(f"{k} {m['versions'][k]}" for k in libraries)])
