"""The Results page: the table, compare, download, delete, deploy; lineage filters."""

from __future__ import annotations

import json

import pytest

from tests.ui.pages import (
    seed_training,
    table,
)


def test_results_table_compare_download_delete_and_deploy(client, open_page):
    ids = seed_training(client, (("torch-digits", "pytorch"), ("keras-digits", "tensorflow")))
    first, second = ids["results"]
    at = open_page("results")
    rows = {r["result"]: r for r in table(at, "test accuracy")}
    assert set(rows) == {first, second}
    r = client.get_result(first)
    assert rows[first]["test accuracy"] == pytest.approx(r.test_metrics["accuracy"])
    assert rows[first]["val loss"] == pytest.approx(r.val_metrics["loss"])
    assert (rows[first]["model"], rows[first]["status"]) == ("torch-digits", "finished")
    assert rows[second]["training time (s)"] == pytest.approx(52.0)

    at.multiselect(key="results_compare").select(first).select(second).run()
    compared = next(d.value for d in at.dataframe if d.value.index.name == "metric")
    assert list(compared.columns) == [f"{first} · torch-digits", f"{second} · keras-digits"]
    assert compared.loc["test accuracy"].tolist() == [
        pytest.approx(client.get_result(i).test_metrics["accuracy"]) for i in (first, second)
    ]
    [download] = at.get("download_button")
    assert download.proto.label == "Download weights"
    assert download.proto.deferred_file_id  # read when clicked (the browser test fetches it)
    assert not download.proto.disabled

    at.selectbox(key="results_act").select(second).run()
    at.button(key="results_delete").click().run()
    assert at.success[0].value == f"Deleted result {second} (keras-digits)."
    assert [r.id for r in client.list_results()] == [first]

    at.button(key="results_deploy").click().run()  # opens the inference form for it
    assert not at.exception
    assert at.title[0].value == "Inference"
    assert at.selectbox(key="infer_result").value == first
    assert json.loads(at.text_area(key="infer_config").value) == {
        "data_type": "float32",
        "data_reshape": "8 8",
    }
    assert at.text_input(key="infer_input").value == f"inference-{first}-in"


def test_results_are_filtered_by_lineage_drawn_as_a_graph_and_tagged(client, open_page):
    from kafkaml_ray.lineage import record
    from kafkaml_ray.model_code import model_version
    from kafkaml_ray.store import Datasource, TrainingResult

    ids = seed_training(client, (("torch-digits", "pytorch"), ("keras-digits", "tensorflow")))
    first, second = ids["results"]
    with client.store.session() as s:
        ds = s.get_one(Datasource, ids["datasource"])
        for rid, lr in [(first, 0.01), (second, 0.001)]:
            r = s.get_one(TrainingResult, rid)
            r.model_version = model_version(s, r.model)
            r.lineage = record(
                ds, model=r.model, version=r.model_version, params={"batch_size": 32, "lr": lr},
                on_malformed="fail", deployment=r.deployment,
            ).as_json()  # fmt: skip
    at = open_page("results")
    at.text_input(key="results_f_param").input("lr=0.001").run()
    assert [r["result"] for r in table(at, "test accuracy")] == [second]
    at.text_input(key="results_f_param").input("lr=").run()
    at.text_input(key="results_f_metric").input("accuracy is high").run()
    assert "expected NAME>=X" in at.error[0].value  # said, and nothing filtered
    assert {r["result"] for r in table(at, "test accuracy")} == {first, second}
    at.text_input(key="results_f_metric").input("").run()
    at.text_input(key="results_f_param").input("").run()

    at.multiselect(key="results_compare").select(first).select(second).run()
    came = next(d.value for d in at.dataframe if d.value.index.name == "came from")
    assert came.loc["lr"].tolist() == ["0.01", "0.001"]
    assert came.loc["datasource"].tolist() == [str(ids["datasource"])] * 2

    at.selectbox(key="results_act").select(first).run()
    [graph] = at.get("graphviz_chart")
    assert (
        f'"datasource-{ids["datasource"]}" -> "deployment-{ids["deployment"]}"' in graph.proto.spec
    )
    assert f'URL="results?result={first}"' in graph.proto.spec
    at.text_input(key=f"results_tags_{first}").input("candidate, digits").run()
    at.text_area(key=f"results_notes_{first}").input("the one to ship").run()
    at.button(key="results_annotate").click().run()
    r = client.get_result(first)
    assert (r.tags, r.notes) == (["candidate", "digits"], "the one to ship")
    at.text_input(key="results_f_text").input("ship").run()
    assert [r["result"] for r in table(at, "test accuracy")] == [first]
