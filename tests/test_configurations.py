import pytest

from kafkaml_ray.errors import Conflict, InvalidInput, NotFound

pytestmark = pytest.mark.integration


@pytest.fixture
def models(ray_cluster, client, example):
    torch = client.add_model("digits-torch", "pytorch", example("digits_cnn_pytorch.py"))
    keras = client.add_model("digits-keras", "tensorflow", example("digits_cnn_keras.py"))
    return torch, keras


def test_configuration_life_cycle_with_both_frameworks(client, models):
    torch, keras = models
    c = client.create_configuration("digits", [torch.id, "digits-keras"], "both frameworks")
    assert c.model_names == ["digits-torch", "digits-keras"]
    assert client.get_configuration("digits") == c
    assert [x.id for x in client.list_configurations()] == [c.id]

    c2 = client.update_configuration(c.id, models=[keras.id], name="keras-only")
    assert (c2.name, c2.model_ids) == ("keras-only", [keras.id])

    with pytest.raises(Conflict, match="used by configuration 'keras-only'"):
        client.delete_model(keras.id)
    client.delete_model(torch.id)  # no longer used
    client.delete_configuration(c.id)
    client.delete_model(keras.id)
    assert client.list_models() == [] and client.list_configurations() == []


def test_bad_configurations(client, models):
    client.create_configuration("c", [models[0].id])
    with pytest.raises(Conflict, match="'c' exists already"):
        client.create_configuration("c", [models[0].id])
    with pytest.raises(NotFound, match="no model with id or name 'nope'"):
        client.create_configuration("d", ["nope"])
    with pytest.raises(InvalidInput, match="at least one model"):
        client.create_configuration("e", [])
    with pytest.raises(NotFound, match="no configuration"):
        client.delete_configuration(99)
    assert [c.name for c in client.list_configurations()] == ["c"]


def test_keras_models_train_on_one_worker(client, models):
    torch, keras = models
    both = client.create_configuration("both", [torch.id, keras.id])
    with pytest.raises(
        InvalidInput,
        match="num_workers=2 for TensorFlow / Keras model 'digits-keras': it trains on at "
        "most 1 worker",
    ):
        client.deploy_training(both.id, kwargs="num_workers=2")
    assert client.list_deployments() == []
    dep = client.deploy_training(both.id, kwargs={"pytorch": "num_workers=2", "tensorflow": ""})
    assert dep.kwargs["pytorch"]["train"] == {"num_workers": 2}
    assert client.stop_training(dep.id).results[0].status == "stopped"


def test_config_create_takes_models_as_the_readme_writes_them(client, settings, models):
    """`config create NAME MODEL...` (the README's form) and `-m MODEL` (the older one)."""
    import json

    from click.testing import CliRunner

    from kafkaml_ray.cli import cli

    env = {k: v for k, v in settings.env().items() if v is not None}

    def run(*args: str):
        return CliRunner().invoke(cli, ["config", "create", *args, "--json"], env=env)

    r = run("both", "digits-torch", str(models[1].id))
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["model_names"] == ["digits-torch", "digits-keras"]
    r = run("flag", "-m", "digits-keras")
    assert r.exit_code == 0, r.output
    assert json.loads(r.output)["model_names"] == ["digits-keras"]
    r = run("none")
    assert r.exit_code == 2 and "name at least one model" in r.output
