"""Serving the control panel: ``kafkaml-ray ui`` in the foreground, or as a part of the
stack (``start_ui``/``stop_ui``/``ui_status``, pid file ``$KAFKAML_HOME/run/ui.pid``, log
``$KAFKAML_HOME/run/ui.log``). The panel's Streamlit scripts are in ``kafkaml_ray/ui/``.

The panel binds to 127.0.0.1 and asks for a password there too: on a shared host any
local account reaches 127.0.0.1, and the panel registers model code that runs as the
stack's owner. The password comes from the environment (``KAFKAML_UI_PASSWORD``), Streamlit
secrets (``password`` in ``.streamlit/secrets.toml`` of the working directory or the home
directory), or else the file ``$KAFKAML_HOME/ui-password`` (mode 0600), which the first
start makes with a random password and prints once (`ensure_password`). Another address
than 127.0.0.1 needs one of the first two.

This module does not import Streamlit (nor ``kafkaml_ray.ui``): the app runs in its own
process.

>>> is_loopback("127.0.0.1"), is_loopback("localhost"), is_loopback("0.0.0.0")
(True, True, False)
"""

from __future__ import annotations

import contextlib
import ipaddress
import logging
import os
import subprocess
import sys
import tomllib
import urllib.request
from pathlib import Path

import click

from kafkaml_ray._private.procs import (
    Part,
    read_pid,
    run_dir,
    spawn,
    stop_pid,
    wait_ready,
    write_pid,
)
from kafkaml_ray.errors import InvalidInput, Unavailable
from kafkaml_ray.settings import Settings

__all__ = [
    "serve_ui",
    "start_ui",
    "stop_ui",
    "ui_status",
    "is_loopback",
    "password_configured",
    "ensure_password",
    "show_new_password",
    "password_file",
    "PASSWORD_ENV",
]

logger = logging.getLogger(__name__)

APP = Path(__file__).resolve().parent / "ui" / "app.py"
PASSWORD_ENV = "KAFKAML_UI_PASSWORD"


def is_loopback(host: str | None) -> bool:
    """Whether ``host`` is this machine only (127.0.0.0/8, ::1, localhost); an unset
    address (Streamlit then binds every interface) is not."""
    if not host:
        return False
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def allowed_hosts(host: str) -> list[str]:
    """The Host headers the panel's WebSocket accepts: on a loopback address only the local
    names (``localhost``, ``127.0.0.1``, ``::1``); elsewhere, where a password guards it,
    any name the machine is reached by.

    >>> allowed_hosts("127.0.0.1")
    ['localhost', '127.0.0.1', '::1']
    """
    return ["localhost", "127.0.0.1", "::1"] if is_loopback(host) else ["*"]


def _secrets_files() -> list[Path]:
    return [Path.home() / ".streamlit" / "secrets.toml", Path.cwd() / ".streamlit" / "secrets.toml"]


def password_configured() -> bool:
    """Whether a password for the panel is set: ``KAFKAML_UI_PASSWORD`` or a ``password``
    in a Streamlit secrets file that the app will read."""
    if os.environ.get(PASSWORD_ENV):
        return True
    for path in _secrets_files():
        with contextlib.suppress(OSError, tomllib.TOMLDecodeError):
            if tomllib.loads(path.read_text()).get("password"):
                return True
    return False


def password_file(settings: Settings) -> Path:
    """Where the panel's own password is kept when none is configured."""
    return settings.home / "ui-password"


def ensure_password(settings: Settings) -> str | None:
    """Make the panel's password at its first start, when none is configured: a random
    one, written to `password_file` readable by its owner alone. Returns it when it was
    just made (to be shown once), else None."""
    import secrets

    if password_configured() or password_file(settings).exists():
        return None
    path = password_file(settings)
    path.parent.mkdir(parents=True, exist_ok=True)
    password = secrets.token_urlsafe(12)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:  # another start made it meanwhile
        return None
    with os.fdopen(fd, "w") as f:
        f.write(password + "\n")
    return password


def _healthy(url: str) -> bool:
    with (
        contextlib.suppress(OSError),
        urllib.request.urlopen(f"{url}/_stcore/health", timeout=2) as r,
    ):
        return r.status == 200
    return False


def serve_ui(
    settings: Settings,
    host: str = "127.0.0.1",
    port: int | None = None,
    headless: bool = True,
    background: bool = False,
    timeout: float = 60.0,
) -> subprocess.Popen | None:
    """Serve the control panel with ``settings`` (passed to it as environment variables).

    In the foreground (default) it blocks until the server stops and returns None. With
    ``background`` it returns the server process once it answers (within ``timeout``); its
    output goes to ``$KAFKAML_HOME/run/ui.log`` and the caller stops it.
    """
    if not is_loopback(host) and not password_configured():
        raise InvalidInput(
            f"the control panel would listen on {host}: set {PASSWORD_ENV} or a 'password' "
            "in .streamlit/secrets.toml first (or keep --host 127.0.0.1)"
        )
    if ensure_password(settings) is not None:
        logger.warning("the control panel's password is in %s", password_file(settings))
    port = port or settings.ui_port
    cmd = [
        sys.executable,
        "-m",
        "streamlit",
        "run",
        str(APP),
        "--server.address",
        host,
        "--server.port",
        str(port),
        "--server.headless",
        "true" if headless else "false",
        "--server.fileWatcherType",
        "none",
        "--browser.gatherUsageStats",
        "false",
        "--client.toolbarMode",
        "minimal",  # no Streamlit "Deploy" button beside the panel's own actions
        # A web page whose name is rebound to 127.0.0.1 (DNS rebinding) must not drive the
        # panel: its WebSocket names its own Host, which is refused; other origins too.
        "--server.enableCORS",
        "true",
        "--server.enableXsrfProtection",
        "true",
        *(a for h in allowed_hosts(host) for a in ("--server.allowedHosts", h)),
    ]
    env = {**os.environ, **settings.env(), "KAFKAML_UI_PORT": str(port)}
    url = f"http://{'127.0.0.1' if host in ('0.0.0.0', '::') else host}:{port}"
    if not background:
        proc = subprocess.Popen(cmd, env=env)
        try:
            proc.wait()
        except KeyboardInterrupt:  # Streamlit got the SIGINT too and stops
            proc.wait()
        return None
    proc = spawn(cmd, run_dir(settings) / "ui.log", env=env)
    try:
        wait_ready(
            lambda: _healthy(url),
            timeout,
            proc=proc,
            timed_out=f"the control panel did not answer on {url} in {timeout:.0f}s",
            exited=lambda code: f"the control panel exited with code {code}",
        )
    except Unavailable:
        proc.terminate()  # nothing to do when it exited already
        proc.wait()
        raise
    logger.info("control panel on %s (pid %d)", url, proc.pid)
    return proc


# -- as a part of the stack ----------------------------------------------------------------
def _pid_file(settings: Settings) -> Path:
    return run_dir(settings) / "ui.pid"


def _running(settings: Settings) -> tuple[int, str] | None:
    """The pid and URL of the panel that `start_ui` started, if it still runs."""
    found = read_pid(_pid_file(settings), "streamlit")
    if found is None or not found[1]:  # the pid file holds "<pid> <url>"
        return None
    return found


def ui_status(settings: Settings) -> Part:
    """The panel as a part of the stack."""
    found = _running(settings)
    if found is None:
        return Part("ui", False, f"http://127.0.0.1:{settings.ui_port}", "control panel")
    pid, url = found
    return Part("ui", True, url, f"control panel (pid {pid})")


def start_ui(settings: Settings, host: str = "127.0.0.1", timeout: float = 60.0) -> Part:
    """Start the panel in the background (its own process group); harmless when it runs."""
    if _running(settings) is None:
        proc = serve_ui(settings, host=host, background=True, timeout=timeout)
        assert proc is not None
        shown = "127.0.0.1" if host in ("0.0.0.0", "::") else host
        write_pid(_pid_file(settings), proc.pid, f"http://{shown}:{settings.ui_port}")
    return ui_status(settings)


def stop_ui(settings: Settings) -> bool:
    """Stop the panel that `start_ui` started; False if none ran."""
    found = _running(settings)
    _pid_file(settings).unlink(missing_ok=True)
    if found is None:
        return False
    stop_pid(found[0], what="control panel")
    return True


def show_new_password(settings: Settings) -> None:
    """Make the panel's password if there is none yet, and print it (once: it is not
    shown again, and is kept in `password_file`)."""
    made = ensure_password(settings)
    if made is not None:
        click.echo(
            f"control panel password: {made}  (shown once; kept in {password_file(settings)}"
            f", readable by you alone; {PASSWORD_ENV} sets another)",
            err=True,
        )
