"""The Online page: the prequential curve, versions and what serves them."""

from __future__ import annotations

from tests.ui.pages import (
    button,
    charts,
    seed_training,
)


def test_online_shows_the_prequential_curve_versions_and_what_serves_them(client, open_page):
    """An online result's windows (seeded as a run leaves them): the prequential and
    validation curves over windows with the published versions marked, the versions, and
    the inferences that serve it (following, or pinned)."""
    from kafkaml_ray.store import (
        Inference,
        InferenceStatus,
        OnlineWindow,
        ResultStatus,
        ResultVersion,
        TrainingResult,
    )

    ids = seed_training(client, status="training")
    rid = ids["results"][0]
    with client.store.session() as s:
        s.get(TrainingResult, rid).status = ResultStatus.TRAINING
        for n, acc in enumerate([0.2, 0.6, 0.55, 0.8], start=1):
            version = {1: 1, 2: 2, 4: 3}.get(n)
            s.add(
                OnlineWindow(
                    result_id=rid,
                    window=n,
                    messages=100,
                    prequential={"accuracy": acc, "loss": 2 - acc},
                    val={"accuracy": acc + 0.05},
                    offsets={"digits:0": [100 * (n - 1), 100 * n]},
                    version=version,
                )
            )
            if version:
                s.add(
                    ResultVersion(
                        result_id=rid,
                        version=version,
                        window=n,
                        metrics={
                            "accuracy": acc + 0.05,
                            "monitored": acc + 0.05,
                            **({"previous": acc - 0.1} if version > 1 else {}),
                        },
                        offsets={"digits:0": 100 * n},
                        weights_uri=f"/tmp/v{version}",
                    )
                )
        for follow, version in ((True, None), (False, 2)):
            s.add(
                Inference(
                    result_id=rid,
                    input_topic=f"in-{follow}",
                    output_topic=f"out-{follow}",
                    status=InferenceStatus.RUNNING,
                    follow=follow,
                    version=version,
                )
            )
    at = open_page("online")
    assert [m.value for m in at.metric][:2] == ["4", "400"]
    specs = charts(at)
    titles = ["loss", "accuracy", "Versions compared on the same held-out data"]
    assert [spec["title"] for spec in specs] == titles
    lines, rules, labels = specs[0]["layer"]
    compared = specs[2]
    assert compared["mark"]["type"] == "bar" and compared["encoding"]["xOffset"]["field"] == "model"
    assert lines["encoding"]["strokeDash"]["field"] == "subset"
    assert rules["mark"]["type"] == "rule" and labels["mark"]["type"] == "text"
    assert labels["encoding"]["text"]["field"] == "version"  # (windows 1, 2, 4: a doctest)
    versions, served = at.dataframe[0].value, at.dataframe[1].value
    assert list(versions["version"]) == [3, 2, 1]
    assert sorted(served["serves"]) == ["its newest version (follows)", "version 2"]
    assert button(at, "Stop")
    assert not at.exception


def test_online_without_runs_says_so(settings, open_page):
    assert open_page("online").info[0].value.startswith("No online run yet")
