"""The panel as a whole: its layout, imports, sidebar, password rule, `ui` command and its
place in the stack."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from click.testing import CliRunner
from streamlit.testing.v1 import AppTest

from kafkaml_ray import Settings
from kafkaml_ray.cli.ui import ui_command
from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.panel import is_loopback, serve_ui, start_ui, stop_ui, ui_status
from tests.ui.pages import (
    button,
)

ROOT = Path(__file__).resolve().parent.parent.parent
APP = str(ROOT / "kafkaml_ray" / "ui" / "app.py")


def test_no_pages_directory_beside_the_app():
    """Streamlit runs the scripts of a ``pages/`` directory beside the entry script by
    themselves (multipage v1) until a session has called ``st.navigation``: on a fresh
    server ``/models`` would skip ``app.py`` and its password gate."""
    assert not (Path(APP).parent / "pages").exists()


def test_the_panel_imports_no_model_framework():
    """No model code in the Streamlit process: what the panel's scripts import leaves
    PyTorch and TensorFlow out (the Client runs them in Ray workers)."""
    import ast
    import subprocess
    import sys

    modules = set()
    for path in Path(APP).parent.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                modules.update(a.name for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                modules.add(node.module)  # and names that are modules (from ... import common)
                modules.update(f"{node.module}.{a.name}" for a in node.names)
    code = (
        "import importlib, importlib.util, sys\n"
        f"for m in {sorted(modules)!r}:\n"
        "    try:\n"
        "        importlib.import_module(m)\n"
        "    except ModuleNotFoundError:\n"
        "        pass  # a name, not a module\n"
        "print(sorted(m for m in ('torch', 'tensorflow', 'keras') if m in sys.modules))"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, cwd=ROOT
    )
    assert out.stdout.strip() == "[]"
    assert {"kafkaml_ray.ui.common", "kafkaml_ray.ui.charts", "kafkaml_ray.train.tune"} <= modules


def test_sidebar_shows_the_stack_state(settings, open_page):
    text = " ".join(m.value for m in open_page().sidebar.markdown)
    assert "**kafka**" in text and "**ray**" in text


def test_without_a_password_the_panel_refuses(open_page, served_at, monkeypatch, tmp_path):
    served_at("0.0.0.0")
    monkeypatch.setenv("KAFKAML_HOME", str(tmp_path))  # (no password file made there)
    at = open_page(signed_in=False)
    assert "This panel has no password" in at.error[0].value
    assert not at.text_area and not at.dataframe


def test_the_panel_asks_for_its_password_on_127_0_0_1(
    settings, open_page, capsys, monkeypatch, tmp_path
):
    """Any local account of a shared host reaches 127.0.0.1, and the panel registers model
    code that runs as the stack's owner: it asks for a password there too. The first start
    makes one, readable by the owner alone, and prints it once."""
    from kafkaml_ray.panel import password_file, show_new_password

    monkeypatch.setenv("KAFKAML_HOME", str(tmp_path))  # (a home of its own: a first start)
    settings = settings.model_copy(update={"home": tmp_path})
    show_new_password(settings)
    path = password_file(settings)
    password = path.read_text().strip()
    assert oct(path.stat().st_mode & 0o777) == "0o600" and len(password) >= 16
    assert f"control panel password: {password}" in capsys.readouterr().err
    show_new_password(settings)  # (once)
    assert capsys.readouterr().err == "" and path.read_text().strip() == password
    at = open_page(signed_in=False)
    assert at.title[0].value == "kafkaml-ray" and not at.text_area and not at.dataframe
    at.text_input(key="_kml_password").input("wrong")
    button(at, "Sign in").click().run()
    assert at.error[0].value == "wrong password"
    at.text_input(key="_kml_password").input(password)
    button(at, "Sign in").click().run()
    assert not at.exception
    assert at.title[0].value == "Models"


def test_off_loopback_the_panel_asks_for_the_password(settings, open_page, served_at):
    served_at("0.0.0.0")
    at = AppTest.from_file(APP, default_timeout=60)
    at.secrets["password"] = "s3cret"
    at.run()
    at.text_input(key="_kml_password").input("wrong")
    button(at, "Sign in").click().run()
    assert at.error[0].value == "wrong password"
    assert at.title[0].value == "kafkaml-ray"
    at.text_input(key="_kml_password").input("s3cret")
    button(at, "Sign in").click().run()
    assert not at.exception
    assert at.title[0].value == "Models"


def test_the_ui_command_refuses_another_address_without_a_password(monkeypatch, tmp_path):
    monkeypatch.delenv("KAFKAML_UI_PASSWORD", raising=False)
    monkeypatch.setenv("HOME", str(tmp_path))
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(ui_command, ["--host", "0.0.0.0"])
    assert result.exit_code == 1
    assert result.output.startswith("Error: the control panel would listen on 0.0.0.0: set ")
    assert len(result.output.strip().splitlines()) == 1
    assert (is_loopback("::1"), is_loopback("localhost"), is_loopback(None)) == (True, True, False)
    (tmp_path / ".streamlit").mkdir()
    (tmp_path / ".streamlit" / "secrets.toml").write_text('other = "x"\n')
    with pytest.raises(InvalidInput):
        serve_ui(Settings(home=tmp_path), host="0.0.0.0", background=True)


def _websocket_handshake(port: int, host: str) -> int:
    """The HTTP status of a WebSocket handshake to the panel's stream with this Host."""
    import base64
    import socket

    key = base64.b64encode(os.urandom(16)).decode()
    request = (
        f"GET /_stcore/stream HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\n"
        f"Connection: Upgrade\r\nSec-WebSocket-Key: {key}\r\nSec-WebSocket-Version: 13\r\n"
        f"Sec-WebSocket-Protocol: streamlit\r\nOrigin: http://{host}\r\n\r\n"
    )
    with socket.create_connection(("127.0.0.1", port), timeout=10) as sock:
        sock.sendall(request.encode())
        return int(sock.recv(4096).split()[1])


def test_start_status_and_stop_as_a_part_of_the_stack(settings):
    from tests.conftest import free_ports

    settings = settings.model_copy(update={"ui_port": free_ports(1)})
    assert not ui_status(settings).running
    try:
        part = start_ui(settings)
        assert part.running and part.address == f"http://127.0.0.1:{settings.ui_port}"
        assert start_ui(settings) == part  # harmless twice
        # DNS rebinding: a page at evil.example resolved to 127.0.0.1 cannot open the
        # panel's WebSocket (its Host is refused), while the local names can.
        port = settings.ui_port
        assert _websocket_handshake(port, f"127.0.0.1:{port}") == 101
        assert _websocket_handshake(port, f"localhost:{port}") == 101
        assert _websocket_handshake(port, f"evil.example:{port}") == 403
    finally:
        assert stop_ui(settings)
    assert not ui_status(settings).running
    assert not stop_ui(settings)
