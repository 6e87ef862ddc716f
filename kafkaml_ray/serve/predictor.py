"""The model side of an inference: the ``ServedModel`` a replica predicts with (an online
result's version, swapped in place for each newer one when the inference follows it), the
``Predictor`` deployment (chunks of several callers predicted as one batch: what a GPU
inference and HTTP requests use), and predicting sample by sample to find the ones that
fail. Predictions come with the version that made them."""

from __future__ import annotations

import logging
import threading
from typing import Any

import numpy as np
from ray import serve

from kafkaml_ray.serve.spec import InferenceSpec

__all__ = ["Predictor", "ServedModel"]

logger = logging.getLogger(__name__)


class ServedModel:
    """The trained model of an inference and its version. With ``spec.follow``, a thread
    checks the store every ``follow_interval_s`` for a newer published version, loads it
    aside and swaps it in between two batches: each batch is predicted by one version, and
    the versions a replica uses never go down."""

    def __init__(self, spec: InferenceSpec, model: Any = None):
        """``model``: one loaded already (else the spec's weights are loaded). A replica
        that follows starts on the newest published version, not on the one of the
        deploy (a new or restarted replica would serve an older version for a while)."""
        self.spec = spec
        version, uri = spec.version, spec.trained.weights_uri
        if spec.follow and model is None:
            newest = self._newest()
            if newest[0] is not None and newest[0] > (version or 0):
                version, uri = newest
        self.current = (model or self._load(uri), version)
        self._stop = threading.Event()
        if spec.follow:
            threading.Thread(target=self._follow, name="follow-versions", daemon=True).start()

    def _load(self, weights_uri: str) -> Any:
        return self.spec.trained.with_weights(weights_uri).load()

    def _newest(self) -> tuple[int | None, str | None]:
        """The result's newest published version and its weights."""
        from kafkaml_ray.serve.spec import served_version
        from kafkaml_ray.store import Store

        with Store.for_url(self.spec.settings.db_url).session() as s:
            return served_version(s, self.spec.result_id, None)

    def _follow(self) -> None:
        while not self._stop.wait(self.spec.follow_interval_s):
            try:
                version, uri = self._newest()
                if version is not None and (self.current[1] or 0) < version:
                    self.current = (self._load(uri), version)
                    logger.info("result %d: now serving version %d", self.spec.result_id, version)
            except Exception:  # noqa: BLE001 - serve on with the version it has
                logger.exception("result %d: following its versions", self.spec.result_id)

    def predict(self, x: np.ndarray) -> tuple[np.ndarray, int | None]:
        model, version = self.current
        return model.predict(x), version

    def one_by_one(self, chunk: np.ndarray) -> tuple[list[Any], int | None]:
        model, version = self.current
        return _one_by_one(model, chunk), version

    def close(self) -> None:
        self._stop.set()


@serve.deployment(name="Predictor", max_ongoing_requests=64)
class Predictor:
    """The trained model; predicts chunks of samples, batched across callers."""

    def __init__(self, spec: InferenceSpec):
        self.spec = spec
        # A CPU inference predicts in its ingress replicas, and this replica only answers
        # HTTP requests: it loads the model at the first one (most never get one; each
        # inference so starts one framework import fewer and holds 0.4-0.5 GiB less).
        self._model = None if spec.predict_in_ingress else ServedModel(spec)
        self._loading = threading.Lock()
        self.predict.set_max_batch_size(max(1, spec.batch_size))
        self.predict.set_batch_wait_timeout_s(spec.max_wait_ms / 1000)

    @property
    def model(self) -> ServedModel:
        if self._model is None:
            with self._loading:
                if self._model is None:
                    self._model = ServedModel(self.spec)
        return self._model

    @serve.batch(max_batch_size=64, batch_wait_timeout_s=0.005)
    async def predict(self, chunks: list[np.ndarray]) -> list[Any]:
        """Each call brings a chunk (n samples); the chunks are predicted as one batch.
        Each gets ``(its predictions, the version that made them)``."""
        sizes = [len(c) for c in chunks]
        try:
            out, version = self.model.predict(np.concatenate(chunks))
        except Exception as e:  # noqa: BLE001 - each chunk retried alone by its caller
            return [e] * len(chunks)
        return [(part, version) for part in np.split(out, np.cumsum(sizes)[:-1])]

    async def predict_one_by_one(self, chunk: np.ndarray) -> tuple[list[Any], int | None]:
        return self.model.one_by_one(chunk)


def _one_by_one(model: Any, chunk: np.ndarray) -> list[Any]:
    """Predict samples separately; a failing sample gets its error text instead."""
    out: list[Any] = []
    for x in chunk:
        try:
            out.append(model.predict(x[None])[0])
        except Exception as e:  # noqa: BLE001
            out.append(f"{type(e).__name__}: {e}")
    return out
