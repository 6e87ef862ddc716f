"""TensorFlow / Keras, as Kafka-ML writes it: code that defines a compiled Keras ``model``.
Its input shape is read off the model (or an ``input_shape`` the code sets). Trained with
``fit``; weights saved in Keras' own ``.keras`` format and loaded with ``safe_mode``.
"""

from __future__ import annotations

import contextlib
import math
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kafkaml_ray.errors import InvalidInput, ModelCodeError
from kafkaml_ray.frameworks.base import Fitted, Framework, Progress, TrainSpec
from kafkaml_ray.frameworks.code import defined
from kafkaml_ray.frameworks.data import (
    confusion,
    fit_shape,
    is_classes,
    to_numpy,
    train_and_val,
)

__all__ = ["Keras", "KerasLearner", "import_tensorflow"]


def import_tensorflow(with_torch: bool = True) -> Any:
    """Import TensorFlow, after PyTorch when both are installed (``with_torch``).

    TensorFlow 2.21 then PyTorch 2.15 in one process aborts ("LLVM ERROR: Option
    'bitcode-mdindex-threshold' registered more than once"); the other order works. A
    process that will never import PyTorch (a Keras training's own Ray worker) passes
    ``with_torch=False`` and saves PyTorch's import (about 3.5 s of 8.5 on 2 cores).
    """
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    if "tensorflow" in sys.modules:
        return sys.modules["tensorflow"]
    if with_torch:
        with contextlib.suppress(ImportError):
            import torch  # noqa: F401
    import tensorflow

    return tensorflow


class Keras(Framework):
    name = "tensorflow"
    label = "TensorFlow / Keras"
    imports = "import tensorflow as tf\nimport keras\nfrom keras import layers\n"
    libraries = ("tensorflow", "keras")
    weights_name = "model.keras"
    # Keras 3 does not fit under TensorFlow's multi-worker strategy: one worker.
    max_workers = 1

    def namespace(self, code: str, imports: str = "") -> dict[str, Any]:
        import_tensorflow()
        return super().namespace(code, imports)

    def build(self, code: str, imports: str = "") -> Any:
        import keras

        model = self.namespace(code, imports).get("model")
        if model is None:
            raise ModelCodeError("TensorFlow code must define a compiled Keras model named 'model'")
        if not isinstance(model, keras.Model):
            raise ModelCodeError(f"'model' must be a Keras model, not {type(model).__name__}")
        if not getattr(model, "compiled", False):
            raise ModelCodeError(
                "the Keras model is not compiled: call model.compile(optimizer=..., loss=..., "
                "metrics=[...]) in the code"
            )
        return model

    def describe(self, code: str, imports: str = "") -> dict[str, Any]:
        model = self.build(code, imports)
        try:
            out_shape = [int(d) for d in model.output_shape[1:]]
        except (AttributeError, ValueError):
            out_shape = None
        return {
            "input_shape": _input_shape(model),
            "output_shape": out_shape,
            "param_count": int(model.count_params()),
            "metrics": None,  # (Keras names its compiled metrics when it first evaluates)
        }

    def train(
        self, spec: TrainSpec, shards: dict[str, Any], progress: Progress, rank: int,
        distributed: bool,
    ) -> Fitted | None:  # fmt: skip
        return _train(self, spec, shards, progress, rank)

    def learner(self, spec: TrainSpec) -> KerasLearner:
        return KerasLearner(self, spec)

    def load(self, code: str, imports: str, weights: bytes, device: str | None = None) -> Any:
        import keras

        # The classes the code defines (custom layers) by name; code layers (Lambda) would
        # need safe_mode=False: refused on purpose.
        custom = defined(self.namespace(code, imports))
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp) / "model.keras"
            path.write_bytes(weights)
            return keras.models.load_model(path, custom, safe_mode=True)

    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        return np.asarray(model(x, training=False))


def _input_shape(model: Any) -> list[int] | None:
    """One sample's shape, or None when the model does not say."""
    try:
        shape = getattr(model, "input_shape", None)
    except (AttributeError, ValueError):
        return None
    if isinstance(shape, list):  # several inputs: not supported by Kafka-ML either
        shape = shape[0]
    try:
        return [int(d) for d in shape[1:]] if shape is not None else None
    except (TypeError, ValueError):
        return None


def _save(model: Any) -> bytes:
    with tempfile.TemporaryDirectory() as tmp:
        model.save(f"{tmp}/model.keras")
        return Path(f"{tmp}/model.keras").read_bytes()


# -- a batch training -----------------------------------------------------------------------
def _train(
    fw: Keras, spec: TrainSpec, shards: dict, progress: Progress, rank: int
) -> Fitted | None:
    """Train with ``fit`` (one worker: `Keras.max_workers`)."""
    import_tensorflow(with_torch=False)  # (this process trains Keras only)
    import keras

    progress.mark("imported")
    keras.backend.clear_session()  # (a process kept warm by the pool trained before)
    seed = spec.train_args.get("seed", 0)
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    x_train, y_train, x_val, y_val = train_and_val(shards)
    progress.mark("data")
    model = fw.build(spec.code, spec.imports)
    shape = spec.input_shape or _input_shape(model)
    x_train, x_val = (
        fit_shape(x_train, shape, spec.model_name),
        fit_shape(x_val, shape, spec.model_name),
    )
    if "lr" in spec.train_args:
        model.optimizer.learning_rate.assign(spec.train_args["lr"])
    batches = spec.train_args.get("steps_per_epoch") or math.ceil(len(x_train) / spec.batch_size)

    class _Report(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if rank == 0:
                progress.batch(self._epoch, batch + 1, batches, (logs or {}).get("loss"))

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            train_m = {k: v for k, v in logs.items() if not k.startswith("val_")}
            val_m = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
            if rank == 0:
                progress.epoch(epoch + 1, train_m, val_m)

    val_bs = spec.val_args.get("batch_size", spec.batch_size)
    progress.mark("built")
    try:
        model.fit(
            x_train,
            y_train,
            batch_size=spec.batch_size,
            epochs=spec.epochs,
            validation_data=(x_val, y_val) if y_val is not None and len(x_val) else None,
            validation_batch_size=val_bs,
            shuffle=spec.train_args.get("shuffle", True),
            steps_per_epoch=spec.train_args.get("steps_per_epoch"),
            verbose=0,
            callbacks=[_Report()],
        )
    except ValueError as e:
        raise InvalidInput(f"model {spec.model_name!r} does not fit the data: {e}") from None
    seconds = time.perf_counter() - start
    if rank != 0:
        return None
    test_set: dict[str, np.ndarray] = {}

    def test() -> dict:
        x, y = to_numpy(shards["test"]) if "test" in shards else (x_train[:0], None)
        if y is None or not len(x):
            return {}
        test_set.update(x=fit_shape(x, shape, spec.model_name), y=y)
        return model.evaluate(test_set["x"], y, batch_size=val_bs, verbose=0, return_dict=True)

    def matrix() -> list | None:
        if not (test_set and is_classes(test_set["y"])):
            return None
        out = model.predict(test_set["x"], batch_size=val_bs, verbose=0)
        if out.ndim != 2 or out.shape[1] < 2:
            return None
        return confusion(test_set["y"], out.argmax(axis=1), out.shape[1])

    return Fitted(weights=lambda: _save(model), seconds=seconds, test=test, matrix=matrix)


# -- online -------------------------------------------------------------------------------
class KerasLearner:
    """A compiled Keras model trained with ``fit`` and scored with ``evaluate``."""

    def __init__(self, fw: Keras, spec: TrainSpec):
        import_tensorflow()
        import keras

        keras.utils.set_random_seed(spec.train_args.get("seed", 0))
        self.fw, self.spec = fw, spec
        self.model = fw.build(spec.code, spec.imports)
        self.shape = spec.input_shape or _input_shape(self.model)
        if "lr" in spec.train_args:
            self.model.optimizer.learning_rate.assign(spec.train_args["lr"])

    def score(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The model's metrics on ``(x, y)``, in batches of at least 256."""
        size = self.spec.val_args.get("batch_size", max(self.spec.batch_size, 256))
        return self.model.evaluate(x, y, batch_size=size, verbose=0, return_dict=True)

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, float]:
        history = self.model.fit(
            x,
            y,
            batch_size=self.spec.batch_size,
            epochs=epochs,
            shuffle=self.spec.train_args.get("shuffle", True),
            verbose=0,
        ).history
        return {k: v[-1] for k, v in history.items()}

    def weights(self) -> bytes:
        return _save(self.model)

    def load(self, blob: bytes) -> None:
        self.model = self.fw.load(self.spec.code, self.spec.imports, blob)

    def snapshot(self) -> tuple[bytes, bytes]:
        """``(weights, checkpoint)``: one ``.keras`` file holds both (with the optimizer)."""
        weights = self.weights()
        return weights, weights

    restore = load
