"""End to end in a real browser: the served panel, driven by Playwright in Debian's headless
Chromium (the system browser; Playwright downloads none), registers a model in Ray."""

from __future__ import annotations

from pathlib import Path

import pytest

from ui.launch import serve_ui

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]

pytestmark = [
    pytest.mark.browser,
    pytest.mark.integration,
    pytest.mark.skipif(not CHROMIUM.exists(), reason="needs Debian's chromium (/usr/bin/chromium)"),
]


@pytest.fixture
def panel(ray_cluster, settings):
    """The control panel served on a free port, stopped after the test."""
    from conftest import free_ports

    settings = settings.model_copy(update={"ui_port": free_ports(1)})
    proc = serve_ui(settings, background=True, timeout=120)
    yield f"http://127.0.0.1:{settings.ui_port}"
    proc.terminate()
    proc.wait(30)


@pytest.fixture
def page(tmp_path):
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        try:
            yield browser.new_page(viewport={"width": 1400, "height": 1000})
        finally:
            browser.close()


def test_register_a_model_in_the_browser(panel, page, client, example):
    from playwright.sync_api import expect

    page.goto(panel)
    expect(page.get_by_role("heading", name="Models")).to_be_visible(timeout=60_000)
    page.get_by_label("Name", exact=True).fill("browser-digits")
    code = page.get_by_label("Model code")
    code.fill(example("digits_cnn_pytorch.py"))
    code.press("Control+Enter")  # commits the text area, as leaving it does
    expect(page.get_by_text("class DigitsCNN(nn.Module):").first).to_be_visible()
    page.get_by_role("button", name="Register").click()

    expect(page.get_by_text("Registered 'browser-digits'")).to_be_visible(timeout=180_000)
    # The table draws on a canvas; the model list of "Edit or delete" is text.
    models = page.get_by_role("combobox", name="Model")
    expect(models).to_have_value("1 · browser-digits (PyTorch)")
    assert [m.name for m in client.list_models()] == ["browser-digits"]
