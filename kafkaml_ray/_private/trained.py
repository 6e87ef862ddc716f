"""Loading trained models back (in Ray workers only): the code a result trained with plus
its saved weights, read safely (safetensors for PyTorch, Keras' own ``.keras`` format with
``safe_mode``). Used by `Client.predict`, the inference replicas and the runs that continue
from a result."""

from __future__ import annotations

import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from kafkaml_ray import artifacts

if TYPE_CHECKING:
    from kafkaml_ray.store import TrainingResult

__all__ = ["TrainedModel", "TrainedWith"]


@dataclass(frozen=True)
class TrainedWith:
    """What a result trained with: its framework and its model's code version (code,
    imports, input shape). Whatever builds a result's model (serving, `Client.predict`, a
    reproduction, a deployment still waiting for data) takes it from here, never from the
    model's current code: weights loaded into edited code (another activation, a dropout)
    give wrong predictions without an error."""

    framework: str
    code: str
    imports: str
    input_shape: list[int] | None
    #: the model code version's number (None for a result stored before versions were kept)
    version: int | None

    @classmethod
    def of(cls, result: TrainingResult) -> TrainedWith:
        m, v = result.model, result.model_version
        if v is None:
            return cls(m.framework, m.code, m.imports, m.input_shape, None)
        return cls(m.framework, v.code, v.imports, v.input_shape, v.number)


class TrainedModel:
    """A trained model ready to predict batches of numpy samples."""

    def __init__(
        self,
        framework: str,
        code: str,
        imports: str,
        weights_uri: str,
        input_shape: list[int] | None = None,
        device: str | None = None,
    ):
        from kafkaml_ray._private.modelcode import build_model, custom_objects, import_tensorflow

        self.framework, self.input_shape = framework, input_shape
        blob = artifacts.get(weights_uri)
        if framework == "pytorch":
            import torch
            from safetensors.torch import load

            self.model = build_model("pytorch", code, imports)
            self.model.load_state_dict(load(blob))
            self.device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
            self.model.to(self.device).eval()
        else:
            import_tensorflow()
            import keras

            with tempfile.TemporaryDirectory() as tmp:
                path = Path(tmp) / "model.keras"
                path.write_bytes(blob)
                # The classes the code defines (custom layers) by name; code layers
                # (Lambda) would need safe_mode=False: refused on purpose.
                custom = custom_objects("tensorflow", code, imports)
                self.model = keras.models.load_model(path, custom, safe_mode=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.input_shape and list(x.shape[1:]) != list(self.input_shape):
            x = x.reshape(len(x), *self.input_shape)
        if self.framework == "pytorch":
            import torch

            with torch.no_grad():
                return self.model(torch.as_tensor(x, device=self.device)).cpu().numpy()
        return np.asarray(self.model(x, training=False))
