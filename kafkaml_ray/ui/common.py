"""What the pages share: the session's Client, the stack state, messages and errors, the
widgets and texts several pages draw (record pickers, tables, JSON fields, labels)."""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from pathlib import Path
from typing import Any, TypeVar

import streamlit as st

from kafkaml_ray import Client, KafkaMLError, ModelCodeError, Settings, frameworks
from kafkaml_ray.schemas import DatasourceInfo, DeploymentInfo, ResultInfo
from kafkaml_ray.stack import Part
from kafkaml_ray.ui.charts import result_label

__all__ = [
    "client",
    "settings",
    "stack_parts",
    "running",
    "need",
    "header",
    "done",
    "call",
    "act",
    "stop_training",
    "prefill",
    "take_prefill",
    "show_code_error",
    "metrics_text",
    "metric_names",
    "when",
    "seconds",
    "EXAMPLES",
    "pick",
    "pick_newest",
    "choice",
    "table",
    "json_field",
    "stored_streams",
    "waiting_for_data",
    "tested_label",
    "FRAMEWORK_NAMES",
]

logger = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
"""Example model files (in a source checkout; absent in an installed wheel)."""

#: what the panel calls each framework, by name
FRAMEWORK_NAMES = {f: frameworks.get(f).label for f in frameworks.names()}

_CLIENT, _FLASH, _RESET = "_kml_client", "_kml_flash", "_kml_reset"
_PREFILL = "_kml_prefill_"
T = TypeVar("T")


def client() -> Client:
    """This session's Client, built once from ``Settings.from_env()``."""
    if _CLIENT not in st.session_state:
        st.session_state[_CLIENT] = Client(Settings.from_env())
    return st.session_state[_CLIENT]


def settings() -> Settings:
    return client().settings


@st.cache_data(ttl=10, show_spinner=False)
def _stack_parts(key: str, _settings: Settings) -> list[Part]:
    from kafkaml_ray.stack import status

    return status(_settings)


def stack_parts() -> list[Part]:
    """The stack's state (broker, Ray, listener), re-read at most every 10 s."""
    s = settings()
    return _stack_parts(s.model_dump_json(), s)


def running(part: str) -> bool:
    """Whether a part of the stack (``"kafka"``, ``"ray"``, ``"listener"``) runs."""
    return any(p.name == part and p.running for p in stack_parts())


def need(part: str, action: str) -> bool:
    """Check that ``part`` runs before ``action``; if not, say so (and how to start it).

    Ray actions are refused rather than attempted: Ray would start a cluster inside this
    process, and Kafka actions would wait for a broker that is not there."""
    if running(part):
        return True
    where = next((p.address for p in stack_parts() if p.name == part), "")
    how = {
        "ray": "start the stack with `kafkaml-ray up`, or set RAY_ADDRESS",
        "kafka": "start the stack with `kafkaml-ray up`, or set KAFKAML_BOOTSTRAP",
    }.get(part, "start the stack with `kafkaml-ray up`")
    st.error(f"Cannot {action}: {part} is not running at {where}; {how}.", icon=":material/error:")
    return False


def header(title: str, caption: str = "") -> None:
    """Start a page: apply what the last action reset, then show the title and the message
    the action left (see `done`). Every page calls it first."""
    _apply_reset()
    st.title(title)
    if caption:
        st.caption(caption)
    message = st.session_state.pop(_FLASH, None)
    if message:
        st.success(message)


def plain(text: str) -> str:
    r"""Text from outside (a control message, an error quoting it) shown literally where
    Streamlit renders Markdown: no links, images, HTML or emoji shortcodes.

    >>> print(plain("![x](http://evil.example/a.png) :material/home:"))
    \!\[x\]\(http\:\/\/evil\.example\/a\.png\) \:material\/home\:
    """
    return re.sub(r"([\\`*_{}\[\]()<>#+\-.!|~$:/&])", r"\\\1", text)


def done(message: str, reset: Mapping[str, Any] | None = None) -> None:
    """Finish an action: show ``message`` on the next run, set the widgets of ``reset``
    (key: value; None forgets the widget's state) and rerun so every list shows the change."""
    st.session_state[_FLASH] = message
    st.session_state[_RESET] = dict(reset or {})
    st.rerun()


def call(what: str, fn: Callable[..., T], *args: Any, **kwargs: Any) -> tuple[bool, T | None]:
    """Run a Client action under a spinner saying ``what``; ``(True, its value)``, or
    ``(False, None)`` after showing its error: one line, never a traceback."""
    try:
        with st.spinner(what):
            return True, fn(*args, **kwargs)
    except KafkaMLError as e:
        st.error(str(e), icon=":material/error:")
    except Exception as e:  # noqa: BLE001 - a back end's own error (Kafka, Ray): shown, logged
        logger.exception("%s failed", what)
        st.error(f"{what.rstrip('.')} failed: {type(e).__name__}: {e}", icon=":material/error:")
    return False, None


def act(
    what: str,
    fn: Callable[..., T],
    *args: Any,
    then: str | Callable[[T], str],
    reset: Mapping[str, Any] | Callable[[T], Mapping[str, Any]] | None = None,
    **kwargs: Any,
) -> None:
    """`call` a Client action and, when it worked, finish with `done` (``then`` is its
    message, ``reset`` the widgets it sets; either may be made from the action's value);
    when it failed its error stays on the page."""
    ok, value = call(what, fn, *args, **kwargs)
    if ok:
        done(then(value) if callable(then) else then, reset(value) if callable(reset) else reset)


def stop_training(deployment_id: int) -> None:
    """Stop every model of a training deployment (Training and Results pages), if Ray runs."""
    if need("ray", "stop the training"):
        act(
            "Stopping the training...",
            client().stop_training,
            deployment_id,
            then=f"Stopped deployment {deployment_id}.",
        )


def prefill(page: str, **values: Any) -> None:
    """Leave values for the widgets of another page (``page``: its script name) and open it;
    that page applies them with `take_prefill` before drawing its widgets."""
    st.session_state[_PREFILL + page] = values
    st.switch_page(f"views/{page}.py")


def take_prefill(page: str) -> dict[str, Any]:
    """Apply (and return) what another page left for this one with `prefill`."""
    values = st.session_state.pop(_PREFILL + page, {})
    for key, value in values.items():
        st.session_state[key] = value
    return values


def _apply_reset() -> None:
    """Set the widgets that `done` named; runs in the page, before its widgets."""
    for key, value in st.session_state.pop(_RESET, {}).items():
        if value is None:
            st.session_state.pop(key, None)
        else:
            st.session_state[key] = value


def show_code_error(e: ModelCodeError, code: str, imports: str = "") -> None:
    """A model-code error under the editor: the message, and the lines around the one it
    points at (marked), from the code or from the imports."""
    st.error(str(e), icon=":material/error:")
    if not e.line:
        return
    in_imports = e.reason.startswith("imports: ")
    lines = (imports if in_imports else code).splitlines()
    if not 1 <= e.line <= len(lines):
        return
    first, last = max(e.line - 2, 1), min(e.line + 2, len(lines))
    width = len(str(last))
    excerpt = "\n".join(
        f"{'>' if n == e.line else ' '} {n:>{width}} | {lines[n - 1]}"
        for n in range(first, last + 1)
    )
    st.caption(f"line {e.line} of the {'imports' if in_imports else 'model code'}:")
    st.code(excerpt, language="text")


# -- formatting ----------------------------------------------------------------------------
def metric_names(*metrics: Mapping[str, Any]) -> list[str]:
    """The metric names of some metric dicts, loss first, then by name."""
    names = {k for m in metrics for k in m}
    return sorted(names, key=lambda k: (k != "loss", k))


def metrics_text(metrics: Mapping[str, Any] | None) -> str:
    """``{"loss": 0.1234, "accuracy": 0.9567}`` as ``"loss 0.123 · accuracy 0.957"``."""
    if not metrics:
        return ""
    return " · ".join(f"{k} {_number(metrics[k])}" for k in metric_names(metrics))


def _number(value: Any) -> str:
    if value is None:  # the store keeps a NaN or infinite metric as null
        return "nan"
    if isinstance(value, int | float) and not isinstance(value, bool) and math.isfinite(value):
        return f"{value:.4g}" if abs(value) >= 1e-3 or value == 0 else f"{value:.2e}"
    return str(value)


def when(moment: datetime | None) -> str:
    """A stored time (UTC) as text."""
    return moment.strftime("%Y-%m-%d %H:%M:%S") if moment else ""


def seconds(value: float | None) -> str:
    """A duration: ``"42.1 s"``, ``"3 min 5 s"``."""
    if value is None:
        return ""
    if value < 60:
        return f"{value:.1f} s"
    minutes, rest = divmod(round(value), 60)
    return f"{minutes} min {rest} s" if minutes < 60 else f"{minutes // 60} h {minutes % 60} min"


def pick(
    label: str, items: Sequence[Any], key: str, label_of: Callable[[Any], str], **kwargs: Any
) -> Any | None:
    """A selectbox over records with an ``id``: keeps the id in the widget state (so it
    survives reruns as the records change) and returns the chosen record."""
    by_id = {i.id: i for i in items}
    if key in st.session_state and st.session_state[key] not in by_id:
        st.session_state.pop(key)
    chosen = st.selectbox(
        label, list(by_id), format_func=lambda i: label_of(by_id[i]), key=key, **kwargs
    )
    return by_id.get(chosen)


def pick_newest(
    label: str, items: Sequence[Any], key: str, label_of: Callable[[Any], str], **kwargs: Any
) -> Any | None:
    """`pick` over records as the Client lists them (oldest first), offered newest first."""
    return pick(label, list(reversed(items)), key, label_of, **kwargs)


def choice(label: str, options: Mapping[str, str], key: str, **kwargs: Any) -> str:
    """A horizontal radio over ``options`` (value: how it is shown); the chosen value."""
    return st.radio(
        label, list(options), format_func=options.get, horizontal=True, key=key, **kwargs
    )


def table(rows: Sequence[Mapping[str, Any]], empty: str, **kwargs: Any) -> None:
    """``rows`` as a table (no index column), or the ``empty`` message when there are none."""
    if not rows:
        st.info(empty)
        return
    st.dataframe(rows, hide_index=True, **kwargs)


def json_field(text: str, what: str, check: Callable[[Any], T]) -> T | None:
    """The value of a JSON form field (``what`` names it in errors) after ``check``, which
    raises a KafkaMLError when the value is wrong; None after showing why it is not
    usable. Caught here, before any back end."""
    try:
        value = json.loads(text)
    except ValueError as e:
        st.error(f"The {what} is not valid JSON: {e}", icon=":material/error:")
        return None
    try:
        return check(value)
    except KafkaMLError as e:
        st.error(str(e), icon=":material/error:")
        return None


def stored_streams(sources: Sequence[DatasourceInfo]) -> list[DatasourceInfo]:
    """The datasources whose data Kafka holds (not refused, with ranges, not expired): what
    a training or a search can read again."""
    return [d for d in sources if d.status != "refused" and d.topic and not d.expired]


def ranges_text(topic: str) -> str:
    """``"digits:0:0:700,digits:1:0:690"`` as ``"digits[0] 0-700, digits[1] 0-690"``."""
    out = []
    for entry in filter(None, (e.strip() for e in topic.split(","))):
        parts = entry.split(":")
        if len(parts) == 4:
            out.append(f"{parts[0]}[{parts[1]}] {parts[2]}-{parts[3]}")
        elif len(parts) == 3:
            out.append(f"{parts[0]}[{parts[1]}] {parts[2]} (empty)")
        else:
            out.append(entry)
    return ", ".join(out)


def pick_stream(streams: Sequence[DatasourceInfo], key: str) -> DatasourceInfo | None:
    """One of the `stored_streams`, newest first, by description or ranges."""
    return pick_newest(
        "Datasource",
        streams,
        key,
        lambda d: f"{d.id} · {d.description or ranges_text(d.topic)} ({d.total_msg} messages)",
    )


def waiting_for_data(dep: DeploymentInfo) -> bool:
    """Whether a training deployment has a model still waiting for its data stream."""
    return any(r.status == "waiting" for r in dep.results)


def tested_label(r: ResultInfo) -> str:
    """A result with its test metrics: ``"3 · digits-cnn (test: loss 0.1 · accuracy 0.9)"``."""
    return f"{result_label(r)} (test: {metrics_text(r.test_metrics) or '-'})"
