"""The model side of an inference: the ``Predictor`` deployment (the trained model, chunks
of several callers predicted as one batch: what a GPU inference and HTTP requests use), and
predicting sample by sample to find the ones that fail."""

from __future__ import annotations

from typing import Any

import numpy as np
from ray import serve

from kafkaml_ray.serve.spec import InferenceSpec

__all__ = ["Predictor"]


@serve.deployment(name="Predictor", max_ongoing_requests=64)
class Predictor:
    """The trained model; predicts chunks of samples, batched across callers."""

    def __init__(self, spec: InferenceSpec):
        from kafkaml_ray._private.trained import TrainedModel

        self.spec = spec
        self.model = TrainedModel(
            spec.framework, spec.code, spec.imports, spec.weights_uri, spec.input_shape
        )
        self.predict.set_max_batch_size(max(1, spec.batch_size))
        self.predict.set_batch_wait_timeout_s(spec.max_wait_ms / 1000)

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def predict(self, chunks: list[np.ndarray]) -> list[Any]:
        """Each call brings a chunk (n samples); the chunks are predicted as one batch."""
        sizes = [len(c) for c in chunks]
        try:
            out = self.model.predict(np.concatenate(chunks))
        except Exception as e:  # noqa: BLE001 - each chunk retried alone by its caller
            return [e] * len(chunks)
        return np.split(out, np.cumsum(sizes)[:-1])

    async def predict_one_by_one(self, chunk: np.ndarray) -> list[Any]:
        return _one_by_one(self.model, chunk)


def _one_by_one(model: Any, chunk: np.ndarray) -> list[Any]:
    """Predict samples separately; a failing sample gets its error text instead."""
    out: list[Any] = []
    for x in chunk:
        try:
            out.append(model.predict(x[None])[0])
        except Exception as e:  # noqa: BLE001
            out.append(f"{type(e).__name__}: {e}")
    return out


class _Done:
    """A prediction made in the ingress replica, read like the Predictor's response."""

    def __init__(self, value: Any):
        self.value = value

    def result(self) -> Any:
        return self.value
