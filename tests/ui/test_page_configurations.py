"""The Configurations page."""

from __future__ import annotations

import pytest

from tests.ui.pages import (
    button,
    table,
)


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
