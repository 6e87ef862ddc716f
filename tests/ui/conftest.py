"""The panel's fixtures: the app opened with AppTest on a page, as served at an address,
with or without a back end."""

from __future__ import annotations

from pathlib import Path

import pytest
from streamlit import config
from streamlit.testing.v1 import AppTest

ROOT = Path(__file__).resolve().parent.parent.parent
APP = str(ROOT / "kafkaml_ray" / "ui" / "app.py")


@pytest.fixture
def served_at(monkeypatch):
    """Set Streamlit's server address for the app under test."""
    old = config.get_option("server.address")
    monkeypatch.delenv("KAFKAML_UI_PASSWORD", raising=False)

    def set_address(address: str | None) -> None:
        config.set_option("server.address", address)

    set_address("127.0.0.1")
    yield set_address
    set_address(old)


@pytest.fixture
def no_backend(monkeypatch, tmp_path):
    """Point the app at a home where no broker nor Ray runs (ports where nothing listens)."""
    from tests.conftest import free_ports

    monkeypatch.setenv("KAFKAML_HOME", str(tmp_path / "elsewhere"))
    monkeypatch.setenv("KAFKAML_BROKER_PORT", str(free_ports(1)))
    monkeypatch.setenv("KAFKAML_RAY_PORT", str(free_ports(1)))


@pytest.fixture
def open_page(settings, monkeypatch, served_at):
    """Open a page of the app (``None``: the first) with the test's settings."""
    for key, value in settings.env().items():
        monkeypatch.setenv(key, value)

    def open_(page: str | None = None, signed_in: bool = True) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=180)
        if signed_in:  # (signing in: test_the_panel_asks_for_its_password_on_127_0_0_1)
            at.session_state["_kml_authenticated"] = True
        at.run()
        if page:
            at.switch_page(f"views/{page}.py").run()
        assert not at.exception, at.exception
        return at

    return open_
