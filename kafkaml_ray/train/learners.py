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
        from ignite.engine import create_supervised_evaluator, create_supervised_trainer

        from kafkaml_ray._private.modelcode import build_model, check_torch_parts

        seed = spec.train_args.get("seed", 0)
        torch.manual_seed(seed)  # the initial weights
        # Shuffles and loader seeds from a generator of its own: scoring, or another
        # learner, never changes the order a model trains in.
        self.generator = torch.Generator().manual_seed(seed)
        self.spec = spec
        self.model = build_model("pytorch", spec.code, spec.imports)
        self.shape = spec.input_shape or getattr(self.model, "input_shape", None)
        # The GPU share the task reserved is used, as a batch run's is (it trained on the
        # CPU while holding it); the batches move to it in the engines.
        self.device = torch.device(
            "cuda" if spec.gpu_fraction > 0 and torch.cuda.is_available() else "cpu"
        )
        self.model.to(self.device)
        self.loss_fn, self.optimizer, _ = check_torch_parts(self.model)
        if "lr" in spec.train_args:
            for group in self.optimizer.param_groups:
                group["lr"] = spec.train_args["lr"]
        # One trainer and one evaluator, run again on each call (each run starts afresh).
        self.trainer = create_supervised_trainer(
            self.model,
            self.optimizer,
            self.loss_fn,
            device=self.device,
            output_transform=lambda x, y, y_pred, loss: (y_pred, y),
        )
        for name, metric in self.model.metrics().items():
            metric.attach(self.trainer, name)
        self.evaluator = create_supervised_evaluator(
            self.model, metrics=self.model.metrics(), device=self.device
        )

    def _tensors(self, x: np.ndarray, y: np.ndarray) -> tuple[Any, Any]:
        import torch

        return (
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.long if _is_classes(y) else torch.float32),
        )

    def score(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The model's metrics on ``(x, y)``, without training: in batches of at least 256
        (no gradients are kept, and the metrics average over samples, not batches)."""
        size = self.spec.val_args.get("batch_size", max(self.spec.batch_size, 256))
        return dict(self.evaluator.run(_Batches(*self._tensors(x, y), size)).metrics)

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, float]:
        shuffle = self.generator if self.spec.train_args.get("shuffle", True) else None
        data = _Batches(*self._tensors(x, y), self.spec.batch_size, shuffle)
        return dict(self.trainer.run(data, max_epochs=epochs).metrics)

    def weights(self) -> bytes:
        from safetensors.torch import save

        state = self.model.state_dict()
        return save({k: v.detach().cpu().contiguous() for k, v in state.items()})

    def load(self, blob: bytes) -> None:
        from safetensors.torch import load

        self.model.load_state_dict(load(blob))

    def snapshot(self) -> tuple[bytes, bytes]:
        """``(weights, checkpoint)``: the weights to publish, and what a resumed run
        continues from: the weights with the optimizer's state (Adam's moments would
        start again from zero)."""
        import io

        import torch

        state = io.BytesIO()
        torch.save(
            {"model": self.model.state_dict(), "optimizer": self.optimizer.state_dict()}, state
        )
        return self.weights(), state.getvalue()

    def restore(self, checkpoint: bytes) -> None:
        """Continue from a `snapshot`'s checkpoint (tensors and numbers only: read with
        ``weights_only``, nothing else is unpickled)."""
        import io

        import torch

        state = torch.load(io.BytesIO(checkpoint), map_location=self.device, weights_only=True)
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])


class _Batches:
    """``(x, y)`` tensors in batches, shuffled again on each pass when given a generator:
    slices of whole tensors (a DataLoader would index and stack them sample by sample)."""

    def __init__(self, x: Any, y: Any, size: int, shuffle: Any = None):
        self.x, self.y, self.size, self.shuffle = x, y, size, shuffle

    def __len__(self) -> int:
        return -(-len(self.x) // self.size)

    def __iter__(self):
        import torch

        x, y = self.x, self.y
        if self.shuffle is not None:
            order = torch.randperm(len(x), generator=self.shuffle)
            x, y = x[order], y[order]
        for i in range(0, len(x), self.size):
            yield x[i : i + self.size], y[i : i + self.size]


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
        with tempfile.TemporaryDirectory() as tmp:
            self.model.save(f"{tmp}/model.keras")
            return Path(f"{tmp}/model.keras").read_bytes()

    def load(self, blob: bytes) -> None:
        import keras

        from kafkaml_ray._private.modelcode import custom_objects

        custom = custom_objects("tensorflow", self.spec.code, self.spec.imports)
        with tempfile.TemporaryDirectory() as tmp:
            Path(f"{tmp}/model.keras").write_bytes(blob)
            self.model = keras.models.load_model(f"{tmp}/model.keras", custom, safe_mode=True)

    def snapshot(self) -> tuple[bytes, bytes]:
        """``(weights, checkpoint)``: one ``.keras`` file holds both (with the optimizer)."""
        weights = self.weights()
        return weights, weights

    restore = load


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    out = {}
    for k, v in metrics.items():
        try:
            out[k] = float(v)
        except (TypeError, ValueError):
            continue
    return out
