"""What a machine-learning framework does for kafkaml-ray, in one protocol.

A framework adapter validates and describes model code, builds the model, trains it on a
worker's split (batch) or window after window (its `Learner`, online), saves and loads its
weights in a safe format, predicts, and names the libraries a saved result records. Every
adapter runs through the same cases in ``tests/frameworks/``. Adapters import their
library only inside their methods, which run in Ray workers: the API, CLI and panel
import this package without PyTorch or TensorFlow.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np

from kafkaml_ray.frameworks.code import execute

__all__ = ["Framework", "Learner", "Fitted", "TrainSpec", "Progress"]


class TrainSpec(Protocol):
    """What a training asks of a framework (`kafkaml_ray.train.reporter.RunSpec` is one)."""

    model_name: str
    code: str
    imports: str
    batch_size: int
    train_args: dict[str, Any]
    val_args: dict[str, Any]
    gpu_fraction: float
    input_shape: list[int] | None

    @property
    def epochs(self) -> int: ...


class Progress(Protocol):
    """Where a training reports as it goes (`kafkaml_ray.train.reporter.Reporter`)."""

    def mark(self, phase: str) -> None: ...

    def batch(self, epoch: int, batch: int, batches: int | None, loss: float | None) -> None: ...

    def epoch(self, epoch: int, train: dict[str, float], val: dict[str, float]) -> None: ...


@dataclass
class Fitted:
    """A trained model, on rank 0: what the reporter saves, then evaluates (each a call, so
    the weights are saved before a test evaluation can fail)."""

    weights: Callable[[], bytes]
    seconds: float
    test: Callable[[], dict[str, Any]]
    matrix: Callable[[], list[list[int]] | None]


class Learner(Protocol):
    """A model that keeps learning, window after window (an online run)."""

    #: one sample's shape, or None when the model does not say
    shape: list[int] | None

    def score(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The model's metrics on ``(x, y)``, without training."""

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, float]:
        """Train on ``(x, y)``, continuing from the current weights; the metrics."""

    def weights(self) -> bytes:
        """The weights, in the framework's saved format (what a version publishes)."""

    def load(self, blob: bytes) -> None:
        """Continue from saved ``weights``."""

    def snapshot(self) -> tuple[bytes, bytes]:
        """``(weights, checkpoint)``: a checkpoint also holds the optimizer's state."""

    def restore(self, checkpoint: bytes) -> None:
        """Continue from a `snapshot`'s checkpoint."""


class Framework(ABC):
    """One framework. Subclasses set the attributes and implement the methods."""

    #: the name in the store, the API, the CLI and deployments' kwargs
    name: str
    #: the name people read (the panel)
    label: str
    #: what model code has imported before it runs
    imports: str
    #: the distributions whose versions a saved result records
    libraries: tuple[str, ...]
    #: the saved weights' file name
    weights_name: str
    #: the most data-parallel workers one training may use (None: any number)
    max_workers: int | None = 1
    #: whether a batch training makes ``epochs`` passes (False: it fits once)
    batch_epochs: bool = True
    #: whether the model's own parameters can be set by name (``model.<name>`` in a Tune
    #: search space or a training's arguments: scikit-learn's ``set_params``)
    model_params: bool = False
    #: an example of model code, for the panel and ``--help``
    example: str = ""

    def namespace(self, code: str, imports: str = "") -> dict[str, Any]:
        """What model code defines, executed after this framework's imports."""
        return execute(self.imports, code, imports)

    def preload(self) -> None:
        """Import what `describe` needs, running nothing: the model-code validator does
        this once, then builds each model in a process forked from it (a framework that
        ran an operation before the fork may hang in the child: its thread pools do not
        survive a fork)."""
        execute(self.imports, "")

    @abstractmethod
    def build(self, code: str, imports: str = "") -> Any:
        """Execute model code and return the untrained model it defines."""

    @abstractmethod
    def describe(self, code: str, imports: str = "") -> dict[str, Any]:
        """Build the model, check it, and return ``input_shape``, ``output_shape``,
        ``param_count`` and ``metrics`` (the names each epoch reports; None: unknown)."""

    @abstractmethod
    def train(
        self, spec: TrainSpec, shards: dict[str, Any], progress: Progress, rank: int,
        distributed: bool,
    ) -> Fitted | None:  # fmt: skip
        """Train on one worker's ``shards`` (train/val/test data); `Fitted` on rank 0."""

    def trainer(self) -> Any:
        """The Ray Train trainer of a data-parallel training (``max_workers`` above 1)."""
        raise NotImplementedError(f"{self.label} trains on one worker")

    @abstractmethod
    def learner(self, spec: TrainSpec) -> Learner:
        """A model built from ``spec``'s code that learns window after window."""

    @abstractmethod
    def load(self, code: str, imports: str, weights: bytes, device: str | None = None) -> Any:
        """A model built from its code with saved ``weights``, ready to predict."""

    @abstractmethod
    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        """A loaded model's outputs for a batch of samples."""
