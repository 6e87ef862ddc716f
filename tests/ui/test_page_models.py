"""The Models page: register an example, list, edit, delete; refused code."""

from __future__ import annotations

import pytest

from tests.ui.pages import (
    table,
)

BAD_CODE = "class Net(nn.Module):\n    def __init__(self)\n        pass\n"


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
