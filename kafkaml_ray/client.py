"""The Python API: every action of the CLI and the control panel goes through `Client`.

`Client` is a facade over one service per resource (`kafkaml_ray.api`): ``client.models``,
``client.configurations``, ``client.training``, ``client.results``, ``client.datasources``,
``client.inferences`` and ``client.tuning``. Each of its methods is the service's, under
the name it has always had (``client.add_model`` is ``client.models.add``), so scripts
written against either read the same.

>>> from kafkaml_ray import Client, Settings
>>> client = Client(Settings(home="/tmp/kml-doctest", db="sqlite://"))
>>> client.list_models(), client.models.list()
([], [])
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from typing import Any

from kafkaml_ray.api import (
    Configurations,
    Datasources,
    Inferences,
    Models,
    Results,
    Training,
    Tuning,
)
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import Store

__all__ = ["Client"]


def _of(service: str, method: Callable[..., Any]) -> Any:
    """A Client method that calls ``method`` on the client's ``service`` (same signature,
    same docstring)."""

    @functools.wraps(method)
    def call(self: Client, *args: Any, **kwargs: Any) -> Any:
        return getattr(getattr(self, service), method.__name__)(*args, **kwargs)

    return call


class Client:
    """Models, configurations, training, results, datasources, inference and tuning, on one
    metadata store (``settings.db_url``) and its Ray cluster and Kafka cluster."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None):
        self.settings = settings or Settings.from_env()
        self.store = store or Store.for_url(self.settings.db_url)
        self.models = Models(self)
        self.configurations = Configurations(self)
        self.training = Training(self)
        self.results = Results(self)
        self.datasources = Datasources(self)
        self.inferences = Inferences(self)
        self.tuning = Tuning(self)

    # -- models and configurations ------------------------------------------------------
    add_model = _of("models", Models.add)
    update_model = _of("models", Models.update)
    list_models = _of("models", Models.list)
    get_model = _of("models", Models.get)
    list_model_versions = _of("models", Models.versions)
    get_model_version = _of("models", Models.version)
    delete_model = _of("models", Models.delete)
    create_configuration = _of("configurations", Configurations.create)
    update_configuration = _of("configurations", Configurations.update)
    list_configurations = _of("configurations", Configurations.list)
    get_configuration = _of("configurations", Configurations.get)
    delete_configuration = _of("configurations", Configurations.delete)

    # -- training --------------------------------------------------------------------------
    deploy_training = _of("training", Training.deploy)
    list_deployments = _of("training", Training.list)
    get_deployment = _of("training", Training.get)
    wait_for_deployment = _of("training", Training.wait)
    stop_training = _of("training", Training.stop)
    resume_training = _of("training", Training.resume)
    reproduce = _of("training", Training.reproduce)

    # -- results ---------------------------------------------------------------------------
    list_results = _of("results", Results.list)
    get_result = _of("results", Results.get)
    tag_result = _of("results", Results.tag)
    set_result_notes = _of("results", Results.set_notes)
    lineage = _of("results", Results.lineage)
    list_online_results = _of("results", Results.list_online)
    list_windows = _of("results", Results.windows)
    list_versions = _of("results", Results.versions)
    delete_result = _of("results", Results.delete)
    download_weights = _of("results", Results.download_weights)
    predict = _of("results", Results.predict)

    # -- datasources -----------------------------------------------------------------------
    list_datasources = _of("datasources", Datasources.list)
    get_datasource = _of("datasources", Datasources.get)
    resend_datasource = _of("datasources", Datasources.resend)

    # -- inference -------------------------------------------------------------------------
    deploy_inference = _of("inferences", Inferences.deploy)
    list_inferences = _of("inferences", Inferences.list)
    get_inference = _of("inferences", Inferences.get)
    stop_inference = _of("inferences", Inferences.stop)
    restart_inference = _of("inferences", Inferences.restart)
    delete_inference = _of("inferences", Inferences.delete)
    tap = _of("inferences", Inferences.tap)

    # -- hyper-parameter search ------------------------------------------------------------
    tune = _of("tuning", Tuning.start)
    list_tunes = _of("tuning", Tuning.list)
    get_tune = _of("tuning", Tuning.get)
    stop_tune = _of("tuning", Tuning.stop)
    delete_tune = _of("tuning", Tuning.delete)
    wait_for_tune = _of("tuning", Tuning.wait)
