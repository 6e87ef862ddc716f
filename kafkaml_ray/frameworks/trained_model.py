"""`TrainedModel`: what a training produces, and the one way a result's model is loaded.

Serving, `Client.predict`, a reproduction, Tune, an online run's versions and the MLflow
export all load a result through it: the framework, the code version the weights trained
with, its input shape and the weights' URI. Nothing loads a result with its model's
*current* code: weights loaded into edited code (another activation, a dropout) give wrong
predictions without an error.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np

from kafkaml_ray import artifacts
from kafkaml_ray.errors import NotFound

if TYPE_CHECKING:
    from kafkaml_ray.frameworks.base import Framework

__all__ = ["TrainedModel", "Loaded"]


@dataclass(frozen=True)
class TrainedModel:
    """A result's model: the code version it trained with and its saved weights.

    >>> t = TrainedModel("pytorch", "model = ...", "", [4], 2, None)
    >>> t.adapter.label, t.with_weights("file:///tmp/w").weights_uri
    ('PyTorch', 'file:///tmp/w')
    """

    framework: str
    code: str
    imports: str
    input_shape: list[int] | None
    #: the model code version's number (None for a result stored before versions were kept)
    code_version: int | None
    #: the saved weights (None: not trained yet, e.g. a deployment waiting for its data)
    weights_uri: str | None = None

    @classmethod
    def of(cls, result: Any) -> TrainedModel:
        """A `kafkaml_ray.store.TrainingResult`'s model, with the code it trained with."""
        m, v, uri = result.model, result.model_version, result.weights_uri
        if v is None:
            return cls(m.framework, m.code, m.imports, m.input_shape, None, uri)
        return cls(m.framework, v.code, v.imports, v.input_shape, v.number, uri)

    @property
    def adapter(self) -> Framework:
        from kafkaml_ray.frameworks import get

        return get(self.framework)

    def with_weights(self, weights_uri: str) -> TrainedModel:
        """The same code with other weights (an online run's published version)."""
        return dataclasses.replace(self, weights_uri=weights_uri)

    def load(self, device: str | None = None) -> Loaded:
        """The model with its weights, ready to predict (in a Ray worker: runs its code)."""
        if not self.weights_uri:
            raise NotFound("this result has no saved weights")
        blob = artifacts.get(self.weights_uri)
        return Loaded(self, self.adapter.load(self.code, self.imports, blob, device))


class Loaded:
    """A trained model ready to predict batches of numpy samples."""

    def __init__(self, trained: TrainedModel, model: Any):
        self.trained, self.model = trained, model
        self.framework, self.input_shape = trained.framework, trained.input_shape

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.input_shape and list(x.shape[1:]) != list(self.input_shape):
            x = x.reshape(len(x), *self.input_shape)
        return self.trained.adapter.predict(self.model, x)
