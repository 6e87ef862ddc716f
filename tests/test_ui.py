"""The control panel, driven by Streamlit's AppTest against a real store, Ray and broker.

Settings reach the app as in production: as environment variables (``Settings.env()``),
read by ``Settings.from_env()`` when the app builds its session's Client. The app's server
address is set to 127.0.0.1 (Streamlit's config) except in the password tests.
"""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from click.testing import CliRunner
from streamlit import config
from streamlit.testing.v1 import AppTest

from kafkaml_ray import Settings
from kafkaml_ray.errors import InvalidInput
from ui.launch import is_loopback, serve_ui, start_ui, stop_ui, ui_command, ui_status

APP = str(Path(__file__).resolve().parent.parent / "ui" / "app.py")
BAD_CODE = "class Net(nn.Module):\n    def __init__(self)\n        pass\n"


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
def open_page(settings, monkeypatch, served_at):
    """Open a page of the app (``None``: the first) with the test's settings."""
    for key, value in settings.env().items():
        monkeypatch.setenv(key, value)

    def open_(page: str | None = None) -> AppTest:
        at = AppTest.from_file(APP, default_timeout=180).run()
        if page:
            at.switch_page(f"pages/{page}.py").run()
        assert not at.exception, at.exception
        return at

    return open_


def button(at: AppTest, label: str):
    return next(b for b in at.button if b.label == label)


def table(at: AppTest, column: str) -> list[dict]:
    """The rows of the page's table that has ``column``."""
    frame = next(d.value for d in at.dataframe if column in d.value.columns)
    return frame.to_dict("records")


# -- models --------------------------------------------------------------------------------
@pytest.mark.integration
def test_models_register_an_example_list_edit_and_delete(ray_cluster, client, open_page, example):
    at = open_page("models")
    assert at.title[0].value == "Models"
    at.selectbox(key="add_example").select("digits_cnn_pytorch.py")
    at.button(key="add_load").click().run()
    assert at.text_area(key="add_code").value == example("digits_cnn_pytorch.py")
    assert at.radio(key="add_framework").value == "pytorch"
    assert example("digits_cnn_pytorch.py").strip() in [c.value for c in at.code]  # preview

    at.button(key="add_submit").click().run()
    assert not at.exception and not at.error
    assert at.success[0].value.startswith("Registered 'digits_cnn_pytorch': input [8, 8]")
    assert at.text_area(key="add_code").value == ""  # the form is cleared
    [row] = table(at, "parameters")
    assert (row["name"], row["framework"], row["input shape"]) == (
        "digits_cnn_pytorch",
        "PyTorch",
        "[8, 8]",
    )

    m = client.get_model("digits_cnn_pytorch")
    at.text_input(key=f"edit_desc_{m.id}").input("digits, 8x8").run()
    at.button(key="edit_save").click().run()
    assert at.success[0].value == "Saved 'digits_cnn_pytorch'."
    assert client.get_model(m.id).description == "digits, 8x8"

    at.button(key="edit_delete").click().run()
    assert at.success[0].value == "Deleted 'digits_cnn_pytorch'."
    assert client.list_models() == []
    assert at.info[0].value.startswith("No models yet")


@pytest.mark.integration
def test_models_refused_code_shows_the_error_at_its_line(ray_cluster, client, open_page):
    at = open_page("models")
    at.text_input(key="add_name").input("bad")
    at.text_area(key="add_code").input(BAD_CODE)
    at.button(key="add_submit").click().run()
    assert not at.exception
    assert at.error[0].value.startswith("line 2: syntax error")
    assert "> 2 |     def __init__(self)" in [c.value for c in at.code][-1]
    assert at.text_area(key="add_code").value == BAD_CODE  # kept for fixing
    assert client.list_models() == []


# -- configurations ------------------------------------------------------------------------
@pytest.mark.integration
def test_configurations_create_list_and_delete(ray_cluster, client, open_page, example):
    torch_model = client.add_model("torch-digits", "pytorch", example("digits_cnn_pytorch.py"))
    at = open_page("configurations")
    assert at.info[0].value.startswith("No configurations yet")
    at.text_input(key="config_name").input("digits")
    at.multiselect(key="config_models").select(torch_model.id)
    button(at, "Create").click().run()
    assert not at.exception and not at.error
    assert at.success[0].value == "Created 'digits' with torch-digits."
    assert table(at, "models")[0]["models"] == "torch-digits"
    assert at.text_input(key="config_name").value == ""

    used = open_page("models")  # a model in use cannot be deleted: one line, no traceback
    used.button(key="edit_delete").click().run()
    assert "is used by configuration 'digits'" in used.error[0].value
    assert not used.exception

    at.button(key="delete_config_submit").click().run()
    assert at.success[0].value == "Deleted 'digits'."
    assert client.list_configurations() == []


def test_configurations_need_a_model_first(settings, open_page):
    at = open_page("configurations")
    assert at.info[1].value == "Register a model on the Models page first."


# -- cluster -------------------------------------------------------------------------------
@pytest.mark.integration
def test_cluster_shows_a_topic_of_the_broker_and_ray(broker, ray_cluster, settings, open_page):
    from confluent_kafka import Producer

    topic = f"ui-{uuid.uuid4().hex[:8]}"
    producer = Producer(settings.kafka_config())
    producer.produce(topic, b"one")
    producer.produce(topic, b"two")
    assert producer.flush(30) == 0

    at = open_page("cluster")
    assert not at.warning, [w.value for w in at.warning]
    topics = {r["topic"]: r for r in table(at, "topic")}
    assert (topics[topic]["partitions"], topics[topic]["end offsets"]) == (1, "0: 2")
    parts = {r["part"]: r["state"] for r in table(at, "part")}
    assert parts["kafka"] == parts["ray"] == "running"
    assert at.metric[0].label == "CPU in use"
    assert at.metric[0].value.endswith("of 4")


# -- the sidebar, the password rule and the command ----------------------------------------
def test_sidebar_shows_the_stack_state(settings, open_page):
    text = " ".join(m.value for m in open_page().sidebar.markdown)
    assert "**kafka**" in text and "**ray**" in text


def test_off_loopback_without_a_password_the_panel_refuses(settings, open_page, served_at):
    served_at("0.0.0.0")
    at = open_page()
    assert "no password is set" in at.error[0].value
    assert not at.text_area and not at.dataframe


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


def test_start_status_and_stop_as_a_part_of_the_stack(settings):
    from conftest import free_ports

    settings = settings.model_copy(update={"ui_port": free_ports(1)})
    assert not ui_status(settings).running
    try:
        part = start_ui(settings)
        assert part.running and part.address == f"http://127.0.0.1:{settings.ui_port}"
        assert start_ui(settings) == part  # harmless twice
    finally:
        assert stop_ui(settings)
    assert not ui_status(settings).running
    assert not stop_ui(settings)
