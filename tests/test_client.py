"""The Client is a facade: each of its methods is one service's (`kafkaml_ray.api`), with its
signature and docstring, and the services are its attributes."""

from __future__ import annotations

import inspect

import pytest

from kafkaml_ray import Client, Settings
from kafkaml_ray.errors import NotFound


def _methods() -> dict[str, object]:
    return {n: f for n, f in vars(Client).items() if not n.startswith("_") and callable(f)}


def test_every_client_method_is_a_service_method_with_its_signature():
    methods = _methods()
    assert len(methods) == 46  # (the whole surface a user's script was written against)
    for name, method in methods.items():
        target = method.__wrapped__
        owner = target.__qualname__.split(".")[0]
        assert inspect.signature(method) == inspect.signature(target), name
        assert method.__doc__ == target.__doc__, name
        assert owner in {
            "Models", "Configurations", "Training", "Results", "Datasources", "Inferences",
            "Tuning",
        }, name  # fmt: skip


def test_the_services_are_attributes_and_answer_like_the_client(tmp_path):
    from kafkaml_ray.store import MLModel

    client = Client(Settings(home=tmp_path, db=f"sqlite:///{tmp_path / 'kml.db'}"))
    with client.store.session() as s:
        s.add(MLModel(name="m", framework="pytorch", code="..."))
    config = client.configurations.create("c", ["m"])
    assert client.get_configuration("c") == config
    assert client.models.list() == client.list_models()
    assert config.model_names == ["m"]
    assert client.results.list() == client.list_results() == []
    with pytest.raises(NotFound, match="no training deployment with id 7"):
        client.training.get(7)
    with pytest.raises(NotFound, match="no training deployment with id 7"):
        client.wait_for_deployment(7, timeout=0)
