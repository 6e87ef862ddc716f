"""PyTorch, as Kafka-ML writes it: an ``nn.Module`` class with ``loss_fn()``,
``optimizer()`` and ``metrics()`` (a dict of Ignite metrics), either instantiated as
``model`` or defined once (then it is instantiated without arguments). An optional
``input_shape`` attribute (without the batch dimension) tells the shape of one sample;
otherwise it is read off the first ``Linear`` layer. Trained with Ignite engines; weights
saved with safetensors.
"""

from __future__ import annotations

import time
from typing import Any

import numpy as np

from kafkaml_ray.errors import InvalidInput, ModelCodeError
from kafkaml_ray.frameworks.base import Fitted, Framework, Progress, TrainSpec
from kafkaml_ray.frameworks.code import MODULE, error_from
from kafkaml_ray.frameworks.data import (
    confusion,
    fit_shape,
    is_classes,
    to_numpy,
    train_and_val,
)

__all__ = ["PyTorch", "TorchLearner"]


class PyTorch(Framework):
    name = "pytorch"
    label = "PyTorch"
    imports = (
        "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n"
        "from ignite.metrics import *\n"
    )
    libraries = ("torch", "pytorch-ignite", "safetensors")
    weights_name = "model.safetensors"
    max_workers = None

    def build(self, code: str, imports: str = "") -> Any:
        from torch import nn

        ns = self.namespace(code, imports)
        model = ns.get("model")
        if not isinstance(model, nn.Module):
            classes = [
                v
                for v in ns.values()
                if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == MODULE
            ]
            if len(classes) != 1:
                found = ", ".join(c.__name__ for c in classes) or "none"
                raise ModelCodeError(
                    "PyTorch code must define one nn.Module subclass (or an instance named "
                    f"'model'); found {len(classes)} classes: {found}"
                )
            try:
                model = classes[0]()
            except BaseException as e:  # noqa: BLE001
                raise error_from(e) from None
        for method in ("loss_fn", "optimizer", "metrics"):
            if not callable(getattr(model, method, None)):
                raise ModelCodeError(
                    f"the PyTorch model {type(model).__name__} has no {method}() method; "
                    "Kafka-ML models define loss_fn(), optimizer() and metrics()"
                )
        return model

    def describe(self, code: str, imports: str = "") -> dict[str, Any]:
        import torch

        model = self.build(code, imports)
        shape = _input_shape(model)
        _, _, metrics = parts(model)
        out_shape = None
        if shape is not None:
            model.eval()
            try:
                with torch.no_grad():
                    out = model(torch.zeros(2, *shape))
            except BaseException as e:  # noqa: BLE001
                raise ModelCodeError(
                    f"forward() fails on an input of shape {shape}: {error_from(e)}"
                ) from None
            out_shape = [int(d) for d in out.shape[1:]]
        return {
            "input_shape": shape,
            "output_shape": out_shape,
            "param_count": int(sum(p.numel() for p in model.parameters())),
            "metrics": sorted(str(k) for k in metrics),  # (what each epoch reports)
        }

    def train(
        self, spec: TrainSpec, shards: dict[str, Any], progress: Progress, rank: int,
        distributed: bool,
    ) -> Fitted | None:  # fmt: skip
        return _train(self, spec, shards, progress, rank, distributed)

    def trainer(self) -> Any:
        from ray.train.torch import TorchTrainer

        return TorchTrainer

    def learner(self, spec: TrainSpec) -> TorchLearner:
        return TorchLearner(self, spec)

    def load(self, code: str, imports: str, weights: bytes, device: str | None = None) -> Any:
        import torch
        from safetensors.torch import load

        model = self.build(code, imports)
        model.load_state_dict(load(weights))
        model.to(torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu")))
        return model.eval()

    def predict(self, model: Any, x: np.ndarray) -> np.ndarray:
        import torch

        weights = next(model.parameters(), None)  # (where `load` put the model)
        device = None if weights is None else weights.device
        with torch.no_grad():
            return model(torch.as_tensor(x, device=device)).cpu().numpy()


def _input_shape(model: Any) -> list[int] | None:
    """One sample's shape: the model's ``input_shape``, else its first layer's, if it says."""
    from torch import nn

    declared = getattr(model, "input_shape", None)
    if declared is not None:
        return [int(d) for d in declared]
    for module in model.modules():
        if isinstance(module, nn.Linear):
            return [module.in_features]
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Flatten):
            return None  # spatial size unknown
    return None


def parts(model: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Call loss_fn(), optimizer(), metrics() and check what they return."""
    import torch
    from ignite.metrics import Metric

    try:
        loss_fn, optimizer, metrics = model.loss_fn(), model.optimizer(), model.metrics()
    except BaseException as e:  # noqa: BLE001
        raise error_from(e) from None
    if not callable(loss_fn):
        raise ModelCodeError(f"loss_fn() must return a loss function, not {type(loss_fn).__name__}")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ModelCodeError(
            f"optimizer() must return a torch.optim.Optimizer, not {type(optimizer).__name__}"
        )
    if (
        not isinstance(metrics, dict)
        or not metrics
        or not all(isinstance(k, str) and isinstance(v, Metric) for k, v in metrics.items())
    ):
        raise ModelCodeError(
            "metrics() must return a dict of Ignite metrics, e.g. "
            "{'accuracy': Accuracy(), 'loss': Loss(self.loss_fn())}; got "
            f"{type(metrics).__name__}"
        )
    return loss_fn, optimizer, metrics


def _weights(model: Any) -> bytes:
    from safetensors.torch import save

    return save({k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()})


def _set_lr(optimizer: Any, train_args: dict[str, Any]) -> None:
    if "lr" in train_args:
        for group in optimizer.param_groups:
            group["lr"] = train_args["lr"]


# -- a batch training -----------------------------------------------------------------------
def _train(
    fw: PyTorch, spec: TrainSpec, shards: dict, progress: Progress, rank: int, distributed: bool
) -> Fitted | None:
    """Train with Ignite on one worker's shards."""
    import torch
    from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer

    progress.mark("imported")
    seed = spec.train_args.get("seed", 0)
    torch.manual_seed(seed)
    np.random.seed(seed)
    start = time.perf_counter()
    x_train, y_train, x_val, y_val = train_and_val(shards)
    progress.mark("data")
    model = fw.build(spec.code, spec.imports)
    shape = spec.input_shape or getattr(model, "input_shape", None)
    x_train, x_val = (
        fit_shape(x_train, shape, spec.model_name),
        fit_shape(x_val, shape, spec.model_name),
    )
    classes = is_classes(y_train)

    device = torch.device("cpu")
    if distributed:
        import ray.train.torch

        device = ray.train.torch.get_device()
    elif spec.gpu_fraction > 0 and torch.cuda.is_available():
        device = torch.device("cuda")  # (the one GPU Ray gave this worker)
    model.to(device)
    # One forward pass first: a shape mismatch becomes a clear error before training.
    try:
        with torch.no_grad():
            out = model(torch.as_tensor(x_train[:2], dtype=torch.float32, device=device))
    except Exception as e:  # noqa: BLE001
        raise InvalidInput(
            f"model {spec.model_name!r} fails on a batch of shape {list(x_train[:2].shape)}: "
            f"{type(e).__name__}: {e}"
        ) from None
    out_dims = tuple(out.shape[1:])
    loss_fn, optimizer, _ = parts(model)
    _set_lr(optimizer, spec.train_args)
    core = model
    if distributed:
        import ray.train.torch

        model = ray.train.torch.prepare_model(model, move_to_device=False)

    def prepare(batch, device=None, non_blocking=False):
        x, y = batch
        x = x.to(device, non_blocking=non_blocking)
        y = y.to(device, non_blocking=non_blocking)
        if y.is_floating_point() and y.ndim == 1 and out_dims == (1,):
            y = y.unsqueeze(1)
        return x, y

    def loader(x, y, shuffle, batch_size):
        ds = torch.utils.data.TensorDataset(
            torch.as_tensor(x, dtype=torch.float32),
            torch.as_tensor(y, dtype=torch.long if classes else torch.float32),
        )
        g = torch.Generator().manual_seed(seed)
        return torch.utils.data.DataLoader(ds, batch_size=batch_size, shuffle=shuffle, generator=g)

    val_bs = spec.val_args.get("batch_size", spec.batch_size)
    train_loader = loader(x_train, y_train, spec.train_args.get("shuffle", True), spec.batch_size)
    val_loader = loader(x_val, y_val, False, val_bs) if y_val is not None and len(x_val) else None
    trainer = create_supervised_trainer(
        model,
        optimizer,
        loss_fn,
        device=device,
        prepare_batch=prepare,
        output_transform=lambda x, y, y_pred, loss: (y_pred, y),
    )
    for name, metric in core.metrics().items():  # training metrics, over each epoch
        metric.attach(trainer, name)
    evaluator = create_supervised_evaluator(
        core, metrics=core.metrics(), device=device, prepare_batch=prepare
    )
    batches = spec.train_args.get("steps_per_epoch") or len(train_loader)
    progress.mark("built")

    @trainer.on(Events.ITERATION_COMPLETED)
    def _progress(engine):
        it = (engine.state.iteration - 1) % batches + 1
        if rank == 0:
            progress.batch(engine.state.epoch, it, batches, None)

    # With several workers Ignite's metrics all-reduce as they compute, so every rank
    # evaluates (each has the whole validation and test sets) and rank 0 reports.
    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch(engine):
        train_m = dict(engine.state.metrics)
        val_m = dict(evaluator.run(val_loader).metrics) if val_loader is not None else {}
        if rank == 0:
            progress.epoch(engine.state.epoch, train_m, val_m)

    trainer.run(train_loader, max_epochs=spec.epochs, epoch_length=batches)
    seconds = time.perf_counter() - start
    test_set: dict[str, np.ndarray] = {}

    def evaluate_test() -> dict:
        x, y = to_numpy(shards["test"]) if "test" in shards else (x_train[:0], None)
        if y is None or not len(x):
            return {}
        test_set.update(x=fit_shape(x, shape, spec.model_name), y=y)
        return evaluator.run(loader(test_set["x"], y, False, val_bs)).metrics

    test = _on_every_rank(evaluate_test) if distributed else evaluate_test
    if rank != 0:
        return None

    def matrix() -> list | None:
        if not (test_set and classes and out_dims and out_dims[0] > 1):
            return None
        preds = predict_batches(core, test_set["x"], device, val_bs).argmax(axis=1)
        return confusion(test_set["y"], preds, out_dims[0])

    return Fitted(weights=lambda: _weights(core), seconds=seconds, test=test, matrix=matrix)


def _on_every_rank(step: Any) -> Any:
    """Run ``step`` now (a collective step, which every rank must take) and return a function
    that gives its result or raises its error: rank 0 records either after the weights are
    saved, so a failing test evaluation never costs the trained model."""
    try:
        out = step()
    except Exception as e:  # noqa: BLE001 - raised again where rank 0 records it
        error = e

        def fail() -> Any:
            raise error

        return fail
    return lambda: out


def predict_batches(
    model: Any, x: np.ndarray, device: Any = None, batch_size: int = 256
) -> np.ndarray:
    """A model's outputs for ``x``, computed ``batch_size`` samples at a time."""
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size], dtype=torch.float32, device=device)
            outs.append(model(xb).cpu().numpy())
    return np.concatenate(outs) if outs else np.empty((0,))


# -- online -------------------------------------------------------------------------------
class TorchLearner:
    """A PyTorch model trained and scored with Ignite, window after window."""

    def __init__(self, fw: PyTorch, spec: TrainSpec):
        import torch
        from ignite.engine import create_supervised_evaluator, create_supervised_trainer

        seed = spec.train_args.get("seed", 0)
        torch.manual_seed(seed)  # the initial weights
        # Shuffles and loader seeds from a generator of its own: scoring, or another
        # learner, never changes the order a model trains in.
        self.generator = torch.Generator().manual_seed(seed)
        self.spec = spec
        self.model = fw.build(spec.code, spec.imports)
        self.shape = spec.input_shape or getattr(self.model, "input_shape", None)
        # The GPU share the task reserved is used, as a batch run's is (it trained on the
        # CPU while holding it); the batches move to it in the engines.
        self.device = torch.device(
            "cuda" if spec.gpu_fraction > 0 and torch.cuda.is_available() else "cpu"
        )
        self.model.to(self.device)
        self.loss_fn, self.optimizer, _ = parts(self.model)
        _set_lr(self.optimizer, spec.train_args)
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
            torch.as_tensor(y, dtype=torch.long if is_classes(y) else torch.float32),
        )

    def score(self, x: np.ndarray, y: np.ndarray) -> dict[str, float]:
        """The model's metrics on ``(x, y)``, without training: in batches of at least 256
        (no gradients are kept, and the metrics average over samples, not batches)."""
        size = self.spec.val_args.get("batch_size", max(self.spec.batch_size, 256))
        return dict(self.evaluator.run(_Batches(*self._tensors(x, y), size)).metrics)

    def fit(self, x: np.ndarray, y: np.ndarray, epochs: int) -> dict[str, float]:
        shuffle = self.generator if self.spec.train_args.get("shuffle", True) else None
        data = _Batches(*self._tensors(x, y), self.spec.batch_size, shuffle)
        # Each window's epochs start afresh (Ignite would refuse fewer than the last run's).
        self.trainer.state.max_epochs = None
        return dict(self.trainer.run(data, max_epochs=epochs).metrics)

    def weights(self) -> bytes:
        return _weights(self.model)

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
