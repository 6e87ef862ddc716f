"""Models that keep learning: built once from their registered code, then scored and trained
batch after batch of samples, continuing from their weights (what an online run does with
each window). PyTorch through Ignite engines, Keras through ``fit`` and ``evaluate``; the
weights in the same safe formats as a batch training's (safetensors, ``.keras``), so a
published version is served like any result."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import numpy as np

from kafkaml_ray.train._loops import _is_classes
from kafkaml_ray.train.reporter import RunSpec

__all__ = ["TorchLearner", "KerasLearner", "floats"]


class TorchLearner:
    """A PyTorch model trained and scored with Ignite, window after window."""

    weights_name = "model.safetensors"

    def __init__(self, spec: RunSpec):
        import torch

        from kafkaml_ray._private.modelcode import build_model, check_torch_parts

        seed = spec.train_args.get("seed", 0)
        torch.manual_seed(seed)  # the initial weights
        # Shuffles and loader seeds from a generator of its own: scoring, or another
        # learner, never changes the order a model trains in.
        self.generator = torch.Generator().manual_seed(seed)
        self.spec = spec
        self.model = build_model("pytorch", spec.code, spec.imports)
        self.shape = spec.input_shape or getattr(self.model, "input_shape", None)
        self.loss_fn, self.optimizer, _ = check_torch_parts(self.model)
        if "lr" in spec.train_args:
            for group in self.optimizer.param_groups:
                group["lr"] = spec.train_args["lr"]

    def _loader(self, x: np.ndarray, y: np.ndarray, shuffle: bool) -> Any:
        import torch

        data = torch.utils.data.TensorDataset(
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.long if _is_classes(y) else torch.float32),
        )
        return torch.utils.data.DataLoader(
            data, batch_size=self.spec.batch_size, shuffle=shuffle, generator=self.generator
        )

    def score(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        from ignite.engine import create_supervised_evaluator

        evaluator = create_supervised_evaluator(self.model, metrics=self.model.metrics())
        return dict(evaluator.run(self._loader(x, y, False)).metrics)

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, float]:
        from ignite.engine import create_supervised_trainer

        trainer = create_supervised_trainer(
            self.model,
            self.optimizer,
            self.loss_fn,
            output_transform=lambda x, y, y_pred, loss: (y_pred, y),
        )
        for name, metric in self.model.metrics().items():
            metric.attach(trainer, name)
        shuffle = self.spec.train_args.get("shuffle", True)
        return dict(trainer.run(self._loader(x, y, shuffle), max_epochs=epochs).metrics)

    def weights(self) -> bytes:
        from safetensors.torch import save

        state = self.model.state_dict()
        return save({k: v.detach().cpu().contiguous() for k, v in state.items()})

    def load(self, blob: bytes) -> None:
        from safetensors.torch import load

        self.model.load_state_dict(load(blob))


class KerasLearner:
    """A compiled Keras model trained with ``fit`` and scored with ``evaluate``."""

    weights_name = "model.keras"

    def __init__(self, spec: RunSpec):
        from kafkaml_ray._private.modelcode import build_model, import_tensorflow

        import_tensorflow()
        import keras

        keras.utils.set_random_seed(spec.train_args.get("seed", 0))
        self.spec = spec
        self.model = build_model("tensorflow", spec.code, spec.imports)
        self.shape = spec.input_shape
        if self.shape is None:
            try:
                self.shape = [int(d) for d in self.model.input_shape[1:]]
            except (AttributeError, ValueError, TypeError):
                self.shape = None
        if "lr" in spec.train_args:
            self.model.optimizer.learning_rate.assign(spec.train_args["lr"])

    def score(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        bs = self.spec.batch_size
        return self.model.evaluate(x, y, batch_size=bs, verbose=0, return_dict=True)

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
        with tempfile.TemporaryDirectory() as tmp:
            self.model.save(f"{tmp}/model.keras")
            return Path(f"{tmp}/model.keras").read_bytes()

    def load(self, blob: bytes) -> None:
        import keras

        with tempfile.TemporaryDirectory() as tmp:
            Path(f"{tmp}/model.keras").write_bytes(blob)
            self.model = keras.models.load_model(f"{tmp}/model.keras", safe_mode=True)


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out
