"""What the pages share: the session's Client, the stack state, messages and errors."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import streamlit as st

from kafkaml_ray import Client, ModelCodeError, Settings
from kafkaml_ray.stack import Part

__all__ = [
    "client",
    "settings",
    "stack_parts",
    "header",
    "done",
    "show_code_error",
    "EXAMPLES",
]

logger = logging.getLogger(__name__)

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"
"""Example model files (in a source checkout; absent in an installed wheel)."""

_CLIENT, _FLASH, _RESET = "_kml_client", "_kml_flash", "_kml_reset"


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


def done(message: str, reset: Mapping[str, Any] | None = None) -> None:
    """Finish an action: show ``message`` on the next run, set the widgets of ``reset``
    (key: value; None forgets the widget's state) and rerun so every list shows the change."""
    st.session_state[_FLASH] = message
    st.session_state[_RESET] = dict(reset or {})
    st.rerun()


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
