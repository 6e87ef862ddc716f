"""The Inference page: the form's checks, the list, the latest predictions, actions."""

from __future__ import annotations

import uuid

import pytest

from tests.ui.pages import (
    charts,
    produce_predictions,
    seed_inference,
    seed_training,
    table,
)


def test_inference_form_checks_its_input_before_any_back_end(client, open_page, no_backend):
    ids = seed_training(client)
    at = open_page("inference")
    (result,) = ids["results"]
    assert at.selectbox(key="infer_result").value == result
    assert at.selectbox(key="infer_format").value == "RAW"
    assert at.toggle(key="infer_exactly_once").value is False  # (at least once by default)
    at.text_input(key="infer_output").input(f"inference-{result}-in")
    at.button(key="infer_deploy").click().run()
    assert at.error[0].value == "The input and output topics must differ."

    at.text_input(key="infer_output").input("predictions")
    at.text_area(key="infer_config").input('{"data_type": "float32",')
    at.button(key="infer_deploy").click().run()
    assert at.error[0].value.startswith("The input config is not valid JSON")

    at.text_area(key="infer_config").input('{"data_type": "float32"}')
    at.radio(key="infer_scaling").set_value("auto").run()
    at.number_input(key="infer_min").set_value(3)
    at.number_input(key="infer_max").set_value(2)
    at.button(key="infer_deploy").click().run()
    assert at.error[0].value == "Min replicas (3) is more than max replicas (2)."

    at.number_input(key="infer_max").set_value(4)
    at.button(key="infer_deploy").click().run()
    assert at.error[0].value.startswith("Cannot deploy the inference: kafka is not running")
    assert client.list_inferences() == []
    assert not at.exception


@pytest.mark.integration
def test_inference_lists_and_shows_the_latest_predictions(broker, client, settings, open_page):
    ids = seed_training(client)
    topic = f"predictions-{uuid.uuid4().hex[:8]}"
    inference = seed_inference(client, ids["results"][0], topic)
    produce_predictions(settings, topic, 12)

    at = open_page("inference")
    [row] = table(at, "dead letters")
    assert (row["inference"], row["status"], row["replicas"]) == (
        inference,
        "running",
        "2 live of 2",
    )
    assert (row["lag"], row["msgs/s"], row["consumed"], row["dead letters"]) == (7, 41.0, 200, 2)
    at.number_input(key="tap_n").set_value(5).run()
    assert not at.exception, at.exception
    live = table(at, "confidence")
    assert [r["key"] for r in live] == [f"sample-{n}" for n in (11, 10, 9, 8, 7)]
    assert [r["class"] for r in live] == [1, 0, 9, 8, 7]
    assert all(0.5 < r["confidence"] < 1 for r in live)
    assert charts(at)[0]["title"] == "predicted classes"

    at.toggle(key="tap_dead").set_value(True).run()
    [dead] = table(at, "offset")
    assert (dead["key"], dead["error"]) == ("bad", "cannot reshape 2 bytes")
    at.button(key="tap_refresh").click().run()
    assert not at.exception


def test_inference_actions_without_ray_say_so(client, open_page, no_backend):
    ids = seed_training(client)
    seed_inference(client, ids["results"][0], "out", "failed", "replica died: out of memory")
    at = open_page("inference")
    assert at.error[0].value == "Failed: replica died: out of memory"
    at.button(key="infer_restart").click().run()
    assert at.error[-1].value.startswith("Cannot restart the inference: ray is not running")
    assert at.warning[0].value == "Kafka is not running: no predictions to read."
