"""Loading trained models back (in Ray workers only): the registered code plus the saved
weights, read safely (safetensors for PyTorch, Keras' own ``.keras`` format with
``safe_mode``). Used to check reloaded predictions and by the inference replicas."""

from __future__ import annotations

import tempfile
from pathlib import Path

import numpy as np

from kafkaml_ray import artifacts

__all__ = ["TrainedModel"]


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
        from kafkaml_ray._private.modelcode import build_model, import_tensorflow

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
                # Code layers (Lambda) would need safe_mode=False: refused on purpose.
                self.model = keras.models.load_model(path, safe_mode=True)

    def predict(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x, dtype=np.float32)
        if self.input_shape and list(x.shape[1:]) != list(self.input_shape):
            x = x.reshape(len(x), *self.input_shape)
        if self.framework == "pytorch":
            import torch

            with torch.no_grad():
                return self.model(torch.as_tensor(x, device=self.device)).cpu().numpy()
        return np.asarray(self.model(x, training=False))
