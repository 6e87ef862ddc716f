"""The kafkaml-ray control panel: ``kafkaml-ray ui`` serves this script.

Settings come from the environment (``Settings.from_env()``), as for the CLI. The panel
asks for its password (``KAFKAML_UI_PASSWORD``, Streamlit secrets' ``password``, or the
file ``$KAFKAML_HOME/ui-password`` that its first start made: `kafkaml_ray.panel`), on
127.0.0.1 too, and shows nothing else without it.
"""

from __future__ import annotations

import hashlib
import hmac
import os
import sys
from pathlib import Path

import streamlit as st

# Streamlit runs this file as a script: make the `ui` package importable from a checkout.
_ROOT = str(Path(__file__).resolve().parent.parent)
if _ROOT not in sys.path:
    sys.path.insert(0, _ROOT)

from kafkaml_ray.errors import KafkaMLError  # noqa: E402
from kafkaml_ray.panel import PASSWORD_ENV, password_file  # noqa: E402
from kafkaml_ray.settings import Settings  # noqa: E402
from kafkaml_ray.ui import common  # noqa: E402

# (section, script under views/, title, icon). A new page: one script in views/, one row
# here; e.g. ("Train", "views/training.py", "Training", ":material/model_training:").
PAGES = [
    ("Build", "views/models.py", "Models", ":material/code:"),
    ("Build", "views/configurations.py", "Configurations", ":material/stacks:"),
    ("Train", "views/training.py", "Training", ":material/model_training:"),
    ("Train", "views/datasources.py", "Datasources", ":material/database:"),
    ("Train", "views/results.py", "Results", ":material/leaderboard:"),
    ("Train", "views/charts.py", "Charts", ":material/show_chart:"),
    ("Train", "views/tuning.py", "Tuning", ":material/tune:"),
    ("Train", "views/online.py", "Online", ":material/stream:"),
    ("Operate", "views/inference.py", "Inference", ":material/bolt:"),
    ("Operate", "views/cluster.py", "Cluster", ":material/hub:"),
]

_AUTHENTICATED = "_kml_authenticated"


def _password() -> str:
    """The configured password, else the panel's own ('' when there is none)."""
    from_env = os.environ.get(PASSWORD_ENV, "")
    if from_env:
        return from_env
    try:
        if secret := str(st.secrets.get("password", "")):
            return secret
    except FileNotFoundError:  # no secrets file
        pass
    try:
        return password_file(Settings.from_env()).read_text().strip()
    except OSError:
        return ""


def _refused() -> None:
    st.title("kafkaml-ray")
    st.error(
        f"This panel has no password: set {PASSWORD_ENV} or a 'password' in Streamlit "
        "secrets, or start it with `kafkaml-ray ui` (which makes one), then restart it."
    )


#: the browser's proof of a sign-in, kept for a week: a reload or a link opened from the
#: panel starts a new session, which would otherwise ask again
_COOKIE, _COOKIE_DAYS = "kafkaml_panel", 7


def _token() -> str:
    """The cookie's value: an HMAC of the password (a new password signs every browser
    out), never the password itself."""
    return hmac.new(_password().encode(), b"kafkaml-ray panel", hashlib.sha256).hexdigest()


def _login() -> None:
    st.title("kafkaml-ray")
    entered = st.text_input("Password", type="password", key="_kml_password")
    if st.button("Sign in", type="primary"):
        if hmac.compare_digest(entered.encode(), _password().encode()):
            st.session_state[_AUTHENTICATED] = True
            st.session_state["_kml_remember"] = True
            st.session_state.pop("_kml_password", None)
            st.rerun()
        st.error("wrong password")


def _remember() -> None:
    """Give the browser the sign-in cookie (once, right after signing in)."""
    if st.session_state.pop("_kml_remember", False):
        from streamlit.components.v1 import html

        age = _COOKIE_DAYS * 86400
        html(
            f"<script>window.parent.document.cookie = '{_COOKIE}={_token()}; Path=/; "
            f"Max-Age={age}; SameSite=Strict';</script>",
            height=0,
        )


def _gate() -> st.Page | None:
    """The login (or refusal) page when this session may not see the panel yet."""
    if st.session_state.get(_AUTHENTICATED):
        return None
    cookie = st.context.cookies.get(_COOKIE)
    cookie = cookie if isinstance(cookie, str) else ""  # (none outside a browser)
    if _password() and hmac.compare_digest(cookie.encode(), _token().encode()):
        st.session_state[_AUTHENTICATED] = True
        return None
    return st.Page(_login if _password() else _refused, title="Sign in", url_path="signin")


def _sidebar() -> None:
    with st.sidebar:
        st.subheader("Stack")
        for part in common.stack_parts():
            icon = ":green[●]" if part.running else ":red[●]"
            state = "running" if part.running else "stopped"
            st.markdown(f"{icon} **{part.name}** {state}  \n`{part.address}`")
            if part.detail:
                st.caption(part.detail)


def main() -> None:
    st.set_page_config(page_title="kafkaml-ray", page_icon=":material/hub:", layout="wide")
    gate = _gate()
    if gate is not None:
        # Only this page exists for the session: every other URL lands on it.
        st.navigation([gate], position="hidden").run()
        return
    sections: dict[str, list] = {}
    for section, script, title, icon in PAGES:
        sections.setdefault(section, []).append(st.Page(script, title=title, icon=icon))
    page = st.navigation(sections)
    _remember()
    try:
        _sidebar()
        page.run()
    except KafkaMLError as e:
        st.error(str(e))


main()
