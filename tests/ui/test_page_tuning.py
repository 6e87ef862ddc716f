"""The Tuning page: checks, trials best first, failures, delete and stop."""

from __future__ import annotations

import json

from tests.ui.pages import (
    button,
    charts,
    seed_training,
    seed_tune,
    table,
)


def test_tuning_checks_the_search_before_any_back_end(client, open_page, no_backend):
    seed_training(client)
    at = open_page("tuning")
    assert at.info[-1].value == "No searches yet: start one above."
    at.text_area(key="tune_space").input('{"lr": ')
    button(at, "Start the search").click().run()
    assert at.error[0].value.startswith("The search space is not valid JSON")
    at.text_area(key="tune_space").input('{"epochs": {"normal": [1, 3]}}')
    button(at, "Start the search").click().run()
    assert at.error[0].value.startswith(
        "search space 'epochs': {'normal': [1, 3]} is not one sampler of choice, grid"
    )
    at.text_area(key="tune_space").input('{"learning_rate": {"loguniform": [0.001, 0.01]}}')
    button(at, "Start the search").click().run()
    assert at.error[0].value.startswith("Cannot start the search: ray is not running")
    assert client.list_tunes() == []
    assert not at.exception


def test_tuning_shows_the_trials_best_first_and_deploys_the_best(client, open_page):
    ids = seed_tune(client)
    best, second, failed = ids["results"]
    at = open_page("tuning")
    [run] = table(at, "trials")
    assert (run["search"], run["status"], run["trials"]) == (ids["tune"], "finished", "3 done of 3")
    assert run["best"].startswith(f"result {best}: val_accuracy 0.9")
    trials = table(at, "epochs done")
    assert [(t["best"], t["result"], t["status"]) for t in trials] == [
        ("★", best, "finished"),
        ("", second, "finished"),
        ("", failed, "failed"),
    ]
    assert (trials[0]["lr"], trials[0]["batch_size"], trials[0]["epochs done"]) == (0.003, 16, 4)
    assert trials[0]["val_accuracy"] > trials[1]["val_accuracy"]
    assert trials[2]["error"] == "RuntimeError: loss is nan"
    [curves] = charts(at)
    assert curves["title"] == "val_accuracy"

    button(at, "Deploy the best for inference").click().run()
    assert at.title[0].value == "Inference"
    assert at.selectbox(key="infer_result").value == best
    assert json.loads(at.text_area(key="infer_config").value)["data_reshape"] == "8 8"
    assert not at.exception


def test_tuning_shows_why_a_search_failed(client, open_page):
    from kafkaml_ray.store import TuneRun

    ids = seed_tune(client, status="failed")
    with client.store.session() as s:
        s.get_one(TuneRun, ids["tune"]).error = "no trial reported metric 'val_f1'"
    at = open_page("tuning")
    assert at.error[0].value == "Failed: no trial reported metric 'val_f1'"
    assert table(at, "trials")[0]["best"] == ""


def test_tuning_deletes_a_search_and_stops_one_only_with_ray(client, open_page, no_backend):
    from kafkaml_ray.store import TuneRun

    on = seed_training(client, status="waiting")
    ids = seed_tune(client, on=on)
    at = open_page("tuning")
    assert at.button(key="tune_stop").disabled and not at.button(key="tune_delete").disabled
    at.button(key="tune_delete").click().run()
    assert at.success[0].value == f"Deleted search {ids['tune']} and its 3 trial result(s)."
    assert client.list_tunes() == []
    assert not {r.id for r in client.list_results()} & set(ids["results"])

    running = seed_tune(client, status="running", on=on)
    at = open_page("tuning")
    assert at.button(key="tune_delete").disabled
    at.button(key="tune_stop").click().run()
    assert at.error[-1].value.startswith("Cannot stop the search: ray is not running")
    with client.store.session() as s:
        assert s.get_one(TuneRun, running["tune"]).status == "running"  # nothing changed
    assert not at.exception
