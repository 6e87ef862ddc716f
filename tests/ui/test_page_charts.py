"""The Charts page: learning curves and confusion matrices."""

from __future__ import annotations

from tests.ui.pages import (
    charts,
    seed_training,
)


def test_charts_draw_learning_curves_and_the_confusion_matrix(client, open_page):
    ids = seed_training(
        client, (("torch-digits", "pytorch"), ("keras-digits", "tensorflow")), epochs=6
    )
    first, second = ids["results"]
    at = open_page("charts")  # the latest deployment's results
    assert sorted(at.multiselect(key="charts_results").value) == [first, second]
    at.multiselect(key="charts_results").unselect(first).run()
    specs = charts(at)
    titles = [s.get("title") for s in specs]
    assert titles[:2] == ["loss", "accuracy"]
    curve = specs[0]
    assert curve["mark"]["type"] == "line" and curve["mark"]["point"] is True
    assert curve["encoding"]["strokeDash"]["field"] == "subset"
    matrix = specs[2]
    assert [layer["mark"]["type"] for layer in matrix["layer"]] == ["rect", "text"]
    assert matrix["title"] == f"{second} · keras-digits: test set"

    at.multiselect(key="charts_results").select(first).run()
    assert sorted(at.multiselect(key="charts_results").value) == [first, second]
    at.selectbox(key="charts_matrix").select(first).run()
    at.toggle(key="charts_normalize").set_value(True).run()
    matrix = charts(at)[2]
    assert matrix["title"] == f"{first} · torch-digits: test set"
    assert matrix["layer"][1]["encoding"]["text"]["format"] == ".0%"
    assert not at.exception


def test_charts_without_results_say_so(settings, open_page):
    assert open_page("charts").info[0].value.startswith("No result has a learning curve yet")
