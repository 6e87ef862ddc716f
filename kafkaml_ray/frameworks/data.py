"""A worker's data as numpy arrays, shaped for a model: what every framework's training
does before its own loop."""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from kafkaml_ray.errors import InvalidInput

__all__ = ["to_numpy", "train_and_val", "fit_shape", "is_classes", "confusion", "floats"]


def to_numpy(it: Any) -> tuple[np.ndarray, np.ndarray | None]:
    """A Ray Dataset (or a worker's shard of one) in memory as ``(data, labels)``."""
    datas, labels = [], []
    for batch in it.iter_batches(batch_size=8192, batch_format="numpy"):
        datas.append(batch["data"])
        if "label" in batch:
            labels.append(batch["label"])
    if not datas:
        return np.empty((0,), np.float32), None
    return np.concatenate(datas), (np.concatenate(labels) if labels else None)


def train_and_val(shards: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """A worker's training and validation shards in memory; training needs labels."""
    x_train, y_train = to_numpy(shards["train"])
    x_val, y_val = to_numpy(shards["val"]) if "val" in shards else (x_train[:0], None)
    if y_train is None:
        raise InvalidInput("the data stream has no labels (keys): supervised training needs them")
    return x_train, y_train, x_val, y_val


def fit_shape(x: np.ndarray, shape: list[int] | None, model_name: str) -> np.ndarray:
    """Data reshaped to the model's input shape when the sizes agree, else a clear error.

    >>> fit_shape(np.zeros((2, 64)), [8, 8], "cnn").shape
    (2, 8, 8)
    >>> fit_shape(np.zeros((2, 3)), [4], "mlp")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    kafkaml_ray.errors.InvalidInput: model 'mlp' takes inputs of shape [4], but ... [3]
    """
    if shape is None or list(x.shape[1:]) == list(shape):
        return x
    if not len(x):  # an empty split (e.g. validation_rate 0) fits any shape
        return x.reshape(0, *shape)
    if math.prod(x.shape[1:]) == math.prod(shape):
        return x.reshape(len(x), *shape)
    raise InvalidInput(
        f"model {model_name!r} takes inputs of shape {list(shape)}, but the data stream "
        f"has samples of shape {list(x.shape[1:])}"
    )


def is_classes(y: np.ndarray | None) -> bool:
    """Whether labels are classes (integers), not values to regress."""
    return y is not None and y.dtype.kind in "iub"


def confusion(y_true: np.ndarray, y_pred: np.ndarray, classes: int) -> list[list[int]]:
    """Confusion matrix: rows are true classes, columns predicted ones.

    >>> confusion(np.array([0, 1, 1]), np.array([0, 0, 1]), 2)
    [[1, 0], [1, 1]]
    """
    idx = y_true.astype(np.int64) * classes + y_pred.astype(np.int64)
    return np.bincount(idx, minlength=classes * classes).reshape(classes, classes).tolist()


def floats(metrics: dict[str, Any]) -> dict[str, float]:
    """The metrics that are numbers, as floats (a per-class array is left out).

    >>> floats({"accuracy": np.float32(0.5), "per_class": [1, 2]})
    {'accuracy': 0.5}
    """
    out = {}
    for k, v in (metrics or {}).items():
        try:
            out[str(k)] = float(np.asarray(v).item())
        except (TypeError, ValueError):
            continue
    return out
