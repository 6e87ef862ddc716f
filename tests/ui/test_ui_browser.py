"""End to end in a real browser: the served panel, driven by Playwright in Debian's headless
Chromium (the system browser; Playwright downloads none), registers a model in Ray and shows
the learning curves of a finished result.

``KAFKAML_SCREENSHOTS=docs/screenshots`` also takes the screenshots of the main pages with
seeded data (``python docs/screenshots/make.py`` does it).
"""

from __future__ import annotations

import os
import uuid
from pathlib import Path

import pytest

from kafkaml_ray.panel import serve_ui
from tests.ui.pages import produce_predictions, seed_inference, seed_training, seed_tune

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
    from tests.conftest import free_ports

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


def _sign_in(page, panel: str, settings) -> None:
    """Sign in with the password the panel's first start made (on 127.0.0.1 too); the
    browser keeps a cookie, so the pages opened after need no second sign-in."""
    from playwright.sync_api import expect

    from kafkaml_ray.panel import password_file

    page.goto(panel)
    expect(page.get_by_role("heading", name="kafkaml-ray")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Stack", exact=True)).to_be_hidden()  # (nothing else shown)
    page.get_by_label("Password", exact=True).fill(password_file(settings).read_text().strip())
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("heading", name="Models")).to_be_visible(timeout=60_000)


def test_register_a_model_in_the_browser(panel, page, client, example, settings):
    from playwright.sync_api import expect

    _sign_in(page, panel, settings)
    # A page's own address, in a new session: app.py runs it (its sidebar), signed in.
    page.goto(f"{panel}/configurations")
    expect(page.get_by_role("heading", name="Configurations")).to_be_visible(timeout=60_000)
    expect(page.get_by_text("Stack", exact=True)).to_be_visible()
    page.get_by_role("link", name="Models").click()
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

    # A finished training of it, as the training run leaves the store, then its charts.
    [result] = seed_training(client, (("browser-digits", "pytorch"),), epochs=5)["results"]
    page.get_by_role("link", name="Charts").click()
    expect(page.get_by_role("heading", name="Charts")).to_be_visible(timeout=60_000)
    curves = page.get_by_test_id("stVegaLiteChart").first
    expect(curves).to_be_visible(timeout=60_000)
    expect(curves.locator("canvas, svg").first).to_be_visible()
    expect(page.get_by_text(f"{result} · browser-digits").first).to_be_visible()

    # Its weights download from the Results page.
    page.get_by_role("link", name="Results").click()
    expect(page.get_by_role("heading", name="Results")).to_be_visible(timeout=60_000)
    with page.expect_download(timeout=60_000) as download:
        page.get_by_role("button", name="Download weights").click()
    assert download.value.suggested_filename == f"result-{result}-model.safetensors"
    assert Path(download.value.path()).read_bytes() == b"weights of result %d" % result


# -- screenshots of the main pages (opt-in) ------------------------------------------------
SHOTS = os.environ.get("KAFKAML_SCREENSHOTS")


def _settle(page, heading: str) -> None:
    """Wait until the page shows ``heading``, its script is done and its charts are drawn."""
    from playwright.sync_api import expect

    expect(page.get_by_role("heading", name=heading, exact=True)).to_be_visible(timeout=60_000)
    expect(page.get_by_test_id("stStatusWidget")).to_be_hidden(timeout=60_000)
    page.wait_for_timeout(1500)


def _seed_showcase(client, settings, example) -> None:
    """A store that looks like a few days of use: example models, two trainings of the
    digits (one finished, one training), an inference with predictions on its topic."""
    from kafkaml_ray.demo import EXAMPLES
    from kafkaml_ray.store import MLModel, ResultStatus, TrainingResult

    shapes = {  # as the validation in Ray records them for the example files
        "digits-cnn-pytorch": ([8, 8], [10], 38_282),
        "digits-cnn-keras": ([8, 8], [10], 38_282),
        "regression-mlp-pytorch": ([26], [1], 3_841),
        "regression-mlp-keras": ([26], [1], 3_841),
        "digits-sgd-sklearn": ([8, 8], [10], None),
        "regression-sgd-sklearn": ([26], None, None),
        "digits-trees-xgboost": ([8, 8], [10], None),
        "regression-trees-xgboost": ([26], None, None),
    }
    with client.store.session() as s:
        for name, (framework, filename, description) in EXAMPLES.items():
            inputs, outputs, params = shapes[name]
            s.add(
                MLModel(
                    name=name,
                    framework=framework,
                    code=example(filename),
                    description=description,
                    input_shape=inputs,
                    output_shape=outputs,
                    param_count=params,
                )
            )
    pair = (("digits-cnn-pytorch", "pytorch"), ("digits-cnn-keras", "tensorflow"))
    done = seed_training(client, pair, epochs=10, name="digits-cnns")
    running = seed_training(client, pair[:1], epochs=10, status="waiting", name="digits-again")
    with client.store.session() as s:
        r = s.get_one(TrainingResult, running["results"][0])
        r.status = ResultStatus.TRAINING
        r.history = s.get_one(TrainingResult, done["results"][0]).history[:3]
        r.progress = {
            "epoch": 4,
            "epochs": 10,
            "batch": 23,
            "batches": 45,
            "metrics": r.history[-1]["val"],
        }
    with client.store.session() as s:  # what a finished run records of where it came from
        from kafkaml_ray.lineage import record, saved
        from kafkaml_ray.model_code import model_version
        from kafkaml_ray.store import Datasource

        for rid in done["results"]:
            r = s.get_one(TrainingResult, rid)
            r.model_version = model_version(s, r.model)
            lineage = record(
                s.get_one(Datasource, done["datasource"]), model=r.model,
                version=r.model_version, params={"batch_size": 32, "epochs": 10},
                on_malformed="fail", deployment=r.deployment,
            )  # fmt: skip
            r.lineage = saved(
                lineage, r.weights_uri, b"weights of result %d" % rid, r.model.framework
            ).as_json()
    seed_tune(client, on=done)
    topic = f"digits-predictions-{uuid.uuid4().hex[:4]}"
    seed_inference(client, done["results"][0], topic)
    produce_predictions(settings, topic, 40)


@pytest.mark.skipif(not SHOTS, reason="set KAFKAML_SCREENSHOTS to a directory to take them")
def test_screenshots_of_the_main_pages(panel, page, client, settings, broker, example):
    out = Path(SHOTS)
    out.mkdir(parents=True, exist_ok=True)
    _seed_showcase(client, settings, example)
    _sign_in(page, panel, settings)
    for path, heading, height in [
        ("models", "Models", 1000),
        ("training", "Training", 1500),
        ("results", "Results", 1250),
        ("charts", "Charts", 1450),
        ("datasources", "Datasources", 1000),
        ("tuning", "Tuning", 1600),
        ("inference", "Inference", 1700),
        ("cluster", "Cluster", 1450),
    ]:
        page.set_viewport_size({"width": 1400, "height": height})
        if path == "charts":  # opened from the comparison on the Results page
            page.get_by_role("button", name="Learning curves of these").click()
        else:
            page.goto(f"{panel}/{'' if path == 'models' else path}")  # Models: the home page
        _settle(page, heading)
        if path == "results":  # compare the two finished ones
            for label in ("1 · digits-cnn-pytorch (finished)", "2 · digits-cnn-keras (finished)"):
                page.get_by_role("combobox", name="Results to compare").click()
                page.get_by_role("option", name=label).click()
                page.keyboard.press("Escape")
                _settle(page, heading)
        page.mouse.move(0, height - 1)  # no hover toolbar over a chart or table
        page.wait_for_timeout(300)
        page.screenshot(path=str(out / f"{path}.png"))
        assert (out / f"{path}.png").stat().st_size < 300_000
    # The served result's lineage graph, as a link from another graph opens it.
    page.set_viewport_size({"width": 1400, "height": 1400})
    page.goto(f"{panel}/results?result=1")
    _settle(page, "Results")
    page.get_by_text("Lineage: where it came from, what came of it").click()
    _settle(page, "Results")
    graph = page.get_by_test_id("stGraphVizChart")
    graph.scroll_into_view_if_needed()
    page.wait_for_timeout(500)
    graph.screenshot(path=str(out / "lineage.png"))
    assert (out / "lineage.png").stat().st_size < 300_000
