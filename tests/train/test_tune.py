"""Hyper-parameter search with Ray Tune: the search space, the best trial, and searches on a
stored datasource on the real broker and a local Ray (trials stored as results, one failing
trial that does not stop the others, the CLI)."""

import json

import pytest

from kafkaml_ray.errors import InvalidInput, NotFound
from kafkaml_ray.store import Datasource, MLModel, ResultStatus, Store, TrainingResult, TuneRun
from kafkaml_ray.train.tune import check_space, finish_search
from tests.conftest import EXAMPLES, add_model_unvalidated, running_listener, wait_until
from tests.train.test_training import regression_data, send_stream

SPACE = {
    "lr": {"loguniform": [1e-3, 3e-2]},
    "batch_size": {"choice": [16, 32]},
    "epochs": {"choice": [1, 2]},
}


# -- without Ray ---------------------------------------------------------------------------
def test_the_search_space_is_checked_and_each_error_names_its_key():
    assert check_space(
        {
            "learning_rate": {"loguniform": [1e-4, 0.1]},
            "batch_size": {"grid": [16, 32]},
            "max_epochs": {"randint": [1, 4]},
            "seed": 3,
            "shuffle": {"choice": [True, False]},
        }
    ) == {
        "lr": {"loguniform": [1e-4, 0.1]},
        "batch_size": {"grid": [16, 32]},
        "epochs": {"randint": [1, 4]},
        "seed": 3,
        "shuffle": {"choice": [True, False]},
    }
    for space, error in [
        ({"lr": {"normal": [0, 1]}}, r"'lr': \{'normal': \[0, 1\]\} is not one sampler"),
        ({"lr": {"choice": [0.1], "grid": [0.2]}}, "'lr': .* is not one sampler"),
        ({"momentum": {"choice": [0.9]}}, "'momentum': not a tunable argument"),
        ({"num_workers": 2}, "'num_workers': not a tunable argument"),
        ({"epochs": {"uniform": [1, 3]}}, "'epochs': training argument epochs=1.0 is not valid"),
        ({"epochs": {"choice": [2, "3"]}}, "'epochs': training argument epochs='3'"),
        ({"lr": {"loguniform": [0, 0.1]}}, "'lr': loguniform needs low > 0"),
        ({"lr": {"uniform": [0.1, 0.01]}}, "'lr': uniform takes \\[low, high\\]"),
        ({"lr": {"uniform": [0.1, 99]}}, "'lr': training argument lr=99.0 is not valid"),
        ({"epochs": {"randint": [1.5, 3]}}, "'epochs': randint takes whole numbers"),
        ({"batch_size": {"choice": []}}, "'batch_size': choice takes a non-empty list"),
        ({"batch_size": {"choice": [0, 8]}}, "'batch_size': batch_size=0 is not a whole"),
        ({"batch_size": [16, 32]}, "'batch_size': a list needs a sampler"),
        ({"lr": 0.1, "learning_rate": 0.2}, "'learning_rate': lr is given twice"),
        ({"model.": 0.1}, "'model.': not a tunable argument"),
        ({"model.alpha-x": 0.1}, "'model.alpha-x': not a tunable argument"),
        ({"model.alpha": {"choice": [[1], 2]}}, r"'model.alpha': \[1\] is not a number"),
        ({"model.alpha": {"a": 1}}, "'model.alpha': .* is not one sampler"),
        ({}, "a search space is a non-empty JSON object"),
        ([1, 2], "a search space is a non-empty JSON object"),
    ]:
        with pytest.raises(InvalidInput, match=error):
            check_space(space)
    # A model's own parameters (scikit-learn, XGBoost), as set_params names them.
    model_space = {
        "model.sgdregressor__alpha": {"loguniform": [1e-5, 1e-1]},
        "model.max_depth": {"randint": [2, 8]},
        "model.loss": {"choice": ["squared_error", "huber"]},
        "model.fit_intercept": False,
        "model.class_weight": None,
    }
    assert check_space(model_space) == model_space


def test_the_best_finished_trial_is_marked():
    store = Store("sqlite://")
    with store.session() as s:
        model = MLModel(name="m", framework="pytorch", code="...")
        ds = Datasource(source_topic="c", source_partition=0, source_offset=0, status="received")
        s.add_all([model, ds])
        s.flush()
        s.add(TuneRun(model=model, datasource_id=ds.id, metric="val_mae", mode="min"))
        for status, val in [
            (ResultStatus.FINISHED, {"mae": 0.5}),
            (ResultStatus.FINISHED, {"mae": 0.2}),
            (ResultStatus.FAILED, {"mae": 0.1}),  # failed: never the best
            (ResultStatus.FINISHED, {"mae": float("nan")}),
            (ResultStatus.TRAINING, {}),  # the search ended under it
        ]:
            s.add(TrainingResult(model=model, tune_id=1, status=status, val_metrics=val))
    finish_search(store, 1, {}, None)
    with store.session() as s:
        run = s.get_one(TuneRun, 1)
        assert (run.status, run.error) == ("finished", None)
        assert [r.best for r in run.results] == [False, True, False, False, False]
        assert run.results[-1].status == ResultStatus.FAILED
        assert run.results[-1].error == "the trial ended without a result"
        run.metric, run.status = "val_accuracy", "running"
    finish_search(store, 1, {}, None)
    with store.session() as s:
        run = s.get_one(TuneRun, 1)
        assert run.status == "failed"
        assert run.error == "no trial reported metric 'val_accuracy'; reported: val_mae"
        assert not any(r.best for r in run.results)


def test_the_client_refuses_a_bad_search_and_stores_nothing(client):
    model_id = add_model_unvalidated(client, "m", "pytorch")
    for kwargs, error in [
        (dict(space={"lr": {"normal": [0, 1]}}), "search space 'lr'"),
        (dict(mode="maximum"), "mode must be 'max' or 'min'"),
        (dict(metric="val loss"), "metric 'val loss' is not a metric name"),
        (dict(num_samples=0), "num_samples must be a whole number"),
        (dict(max_concurrent_trials=1.5), "max_concurrent_trials must be a whole number"),
        (dict(space={"model.alpha": 0.1}), "a PyTorch model's own parameters are set in its code"),
    ]:
        args = dict(space=SPACE, metric="val_loss") | kwargs
        with pytest.raises(InvalidInput, match=error):
            client.tune(model_id, 1, **args)
    with pytest.raises(NotFound, match="no datasource with id 1"):
        client.tune(model_id, 1, SPACE, "val_loss")
    assert client.list_tunes() == []


def test_deleting_is_refused_while_a_search_runs_or_a_trial_is_served(client):
    from kafkaml_ray.errors import Conflict
    from kafkaml_ray.store import Inference

    model_id = add_model_unvalidated(client, "m", "pytorch")
    with client.store.session() as s:
        ds = Datasource(
            source_topic="c", source_partition=0, source_offset=0, status="unknown_deployment"
        )
        s.add(ds)
        s.flush()
        run = TuneRun(model_id=model_id, datasource_id=ds.id, metric="val_loss")
        run.results = [
            TrainingResult(model_id=model_id, status=ResultStatus.FINISHED) for _ in range(2)
        ]
        s.add(run)
        s.flush()
        tune_id, (served, other) = run.id, [r.id for r in run.results]
        s.add(Inference(result_id=served, input_topic="in", output_topic="out"))
    with pytest.raises(Conflict, match=f"tune run {tune_id} is running: stop it first"):
        client.delete_tune(tune_id)
    with client.store.session() as s:
        s.get_one(TuneRun, tune_id).status = "finished"
    for delete in (lambda: client.delete_tune(tune_id), lambda: client.delete_result(served)):
        with pytest.raises(Conflict, match=f"result {served} is served by inference 1"):
            delete()
    assert len(client.get_tune(tune_id).trials) == 2  # nothing deleted
    client.delete_result(other)
    assert [r.id for r in client.get_tune(tune_id).trials] == [served]


# -- on the broker and Ray -----------------------------------------------------------------
@pytest.fixture
def stored(ray_cluster, broker, client, settings, topic):
    """A regression model and a stored datasource of 400 samples (for no deployment)."""
    code = (EXAMPLES / "regression_mlp_pytorch.py").read_text()
    model_id = add_model_unvalidated(client, "mlp", "pytorch", code)
    x, y = regression_data(400)
    with running_listener(settings):
        send_stream(settings, topic, 999, x, y)
        ds = wait_until(client.list_datasources, 60, "the datasource")[0]
    assert ds.status == "unknown_deployment" and ds.total_msg == len(x)
    return model_id, ds.id, x


@pytest.mark.integration
def test_a_search_stores_every_trial_and_marks_the_best(client, stored):
    model_id, datasource_id, x = stored
    t = client.tune("mlp", datasource_id, SPACE, "val_mae", mode="min", num_samples=3)
    assert (t.status, t.model_id, t.metric, t.space) == ("running", model_id, "val_mae", SPACE)
    t = client.wait_for_tune(t.id, timeout=600)
    assert (t.status, t.error) == ("finished", None), [r.error for r in t.trials]
    assert len(t.trials) == 3 and {r.tune_id for r in t.trials} == {t.id}
    params = [r.hyperparameters for r in t.trials]
    assert len({json.dumps(p, sort_keys=True) for p in params}) == 3
    for r in t.trials:
        assert r.status == "finished", r.error
        assert set(r.hyperparameters) == {"lr", "batch_size", "epochs"}
        assert 1e-3 <= r.hyperparameters["lr"] <= 3e-2
        assert [h["epoch"] for h in r.history] == list(range(1, r.hyperparameters["epochs"] + 1))
        assert all(h["train"] and h["val"] for h in r.history)
        assert r.val_metrics["mae"] == r.history[-1]["val"]["mae"]
        assert r.weights_uri and r.training_time_s > 0
    best = [r for r in t.trials if r.best]
    assert len(best) == 1 and t.best_result_id == best[0].id
    assert best[0].val_metrics["mae"] == min(r.val_metrics["mae"] for r in t.trials)
    assert len(client.predict(t.best_result_id, x[:4])) == 4  # the best is usable
    assert [u.id for u in client.list_tunes()] == [t.id]
    assert {r.id for r in client.list_results() if r.tune_id == t.id} == {r.id for r in t.trials}


@pytest.mark.integration
def test_a_failing_trial_is_stored_and_the_others_go_on_from_the_cli(
    client, settings, stored, tmp_path
):
    from click.testing import CliRunner

    from kafkaml_ray.cli import cli

    _, datasource_id, _ = stored
    code = (EXAMPLES / "regression_mlp_pytorch.py").read_text()
    code = code.replace(
        "        super().__init__()\n",
        "        super().__init__()\n"
        "        if torch.initial_seed() == 13:\n"
        "            raise ValueError('unlucky seed')\n",
    )
    add_model_unvalidated(client, "picky", "pytorch", code)
    space = tmp_path / "space.json"
    space.write_text(json.dumps({"seed": {"grid": [0, 13]}, "epochs": 1}))
    env = {k: v for k, v in settings.env().items() if v is not None}

    def run(*args: str) -> str:
        r = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    started = run(
        "tune", "start", "picky", "-d", str(datasource_id), "--space", f"@{space}",
        "--metric", "val_loss", "--mode", "min", "-n", "1", "--follow", "--json",
    )  # fmt: skip
    t = json.loads(started[started.index("{") :])  # after the progress lines
    assert (t["status"], t["num_samples"]) == ("finished", 1)
    ok, bad = sorted(t["trials"], key=lambda r: r["hyperparameters"]["seed"])
    assert ok["status"] == "finished" and ok["best"] and t["best_result_id"] == ok["id"]
    assert bad["status"] == "failed" and "unlucky seed" in bad["error"] and not bad["best"]
    shown = run("tune", "show", str(t["id"]))
    assert "finished" in shown and "unlucky seed" in shown and f"best: result {ok['id']}" in shown
    assert "picky" in run("tune", "list")
    bad_space = '{"lr": {"normal": [1, 2]}}'
    wrong = CliRunner().invoke(
        cli,
        ["tune", "start", "picky", "-d", str(datasource_id), "--space", bad_space,
         "--metric", "val_loss"],
        env=env,
    )  # fmt: skip
    assert wrong.exit_code == 1 and "search space 'lr'" in wrong.output
    assert len(client.list_tunes()) == 1  # nothing stored for the bad space


@pytest.mark.integration
def test_stop_a_search_then_delete_it_from_the_cli(client, settings, stored):
    import ray
    from click.testing import CliRunner

    from kafkaml_ray.cli import cli

    _, datasource_id, x = stored
    env = {k: v for k, v in settings.env().items() if v is not None}

    def run(*args: str) -> str:
        r = CliRunner().invoke(cli, list(args), env=env, catch_exceptions=False)
        assert r.exit_code == 0, r.output
        return r.output

    def placement_groups():
        return {k for k, g in ray.util.placement_group_table().items() if g["state"] != "REMOVED"}

    free, groups = ray.available_resources().get("CPU", 0), placement_groups()
    # Two trials of one epoch finish; two of 5000 epochs are still training when stopped.
    space = {"epochs": {"grid": [1, 5000]}, "seed": {"grid": [0, 1]}}
    t = client.tune(
        "mlp", datasource_id, space, "val_loss", mode="min", num_samples=1, max_concurrent_trials=4
    )
    wait_until(
        lambda: (
            sum(r.status == "finished" for r in client.get_tune(t.id).trials) == 2
            and sum(bool(r.history) for r in client.get_tune(t.id).trials) == 4
        ),
        300,
        "two finished trials and two training",
    )
    stopped = json.loads(run("tune", "stop", str(t.id), "--json"))
    assert (stopped["status"], stopped["error"]) == ("stopped", "stopped by the user")
    by_epochs = sorted(stopped["trials"], key=lambda r: r["hyperparameters"]["epochs"])
    assert [r["status"] for r in by_epochs] == ["finished", "finished", "stopped", "stopped"]
    best = [r for r in by_epochs if r["best"]]  # the best finished trial is still marked
    assert len(best) == 1 and best[0]["status"] == "finished"
    assert stopped["best_result_id"] == best[0]["id"]
    wait_until(lambda: not placement_groups() - groups, 60, "the trials' placement groups removed")
    wait_until(lambda: ray.available_resources().get("CPU", 0) >= free, 120, "CPUs freed")
    after = [r.status for r in client.get_tune(t.id).trials]
    assert after == [r["status"] for r in stopped["trials"]]  # nothing written after the stop
    assert "stopped" in run("tune", "show", str(t.id))

    ids = [r["id"] for r in stopped["trials"]]
    assert f"deleted tune run {t.id}" in run("tune", "delete", str(t.id))
    assert client.list_tunes() == []
    assert not {r.id for r in client.list_results()} & set(ids)
    with pytest.raises(NotFound, match=f"no tune run with id {t.id}"):
        client.get_tune(t.id)


@pytest.mark.integration
def test_a_search_varies_a_scikit_learn_models_own_parameters(client, stored):
    """``model.<parameter>`` reaches the estimator through set_params: each trial's saved
    model has the value its trial was given; a name the estimator lacks fails the trial
    with the name and the estimator's parameters."""
    from kafkaml_ray import artifacts, frameworks

    _, datasource_id, x = stored
    code = (EXAMPLES / "regression_sgd_sklearn.py").read_text()
    add_model_unvalidated(client, "sgd", "sklearn", code)
    space = {"model.sgdregressor__alpha": {"grid": [1e-4, 0.5]}, "seed": 3}
    t = client.tune("sgd", datasource_id, space, "val_mae", "min", num_samples=1)
    t = client.wait_for_tune(t.id, 300)
    assert (t.status, len(t.trials)) == ("finished", 2), [r.error for r in t.trials]
    sklearn = frameworks.get("sklearn")
    for r in t.trials:
        assert r.status == "finished" and r.lineage.params == {"batch_size": 32, **space} | {
            "model.sgdregressor__alpha": r.hyperparameters["model.sgdregressor__alpha"]
        }
        trained = sklearn.load(code, "", artifacts.get(r.weights_uri))
        alpha = trained.get_params()["sgdregressor__alpha"]
        assert alpha == r.hyperparameters["model.sgdregressor__alpha"]
    assert len({r.val_metrics["mae"] for r in t.trials}) == 2  # (it changed what was learnt)

    bad = client.tune("sgd", datasource_id, {"model.alfa": 0.1}, "val_mae", "min", num_samples=1)
    bad = client.wait_for_tune(bad.id, 300)
    assert bad.status == "failed" and "Pipeline has no parameter 'alfa'" in bad.error
    assert "sgdregressor__alpha" in bad.trials[0].error
