"""The training loops: PyTorch with Ignite engines and metrics, Keras with ``fit``.

They run inside Ray Train workers (or a Ray Tune trial) and never in the caller's process.
Each loop builds the model from its registered code, checks that the data fits it, trains
on the worker's shard (held in memory, as Kafka-ML does), records every epoch's training
and validation metrics in the store (Ray Train V2 keeps reported metrics only with a
checkpoint), and on rank 0 evaluates the test set, builds the confusion matrix and saves
the weights in a safe format (safetensors for PyTorch, ``.keras`` for Keras).
"""

from __future__ import annotations

import logging
import math
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np

from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.train.reporter import Reporter, RunSpec, after_training, confusion

__all__ = ["train", "predict_torch", "to_numpy"]

logger = logging.getLogger(__name__)


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


def _train_and_val(shards: dict[str, Any]) -> tuple[np.ndarray, np.ndarray, np.ndarray, Any]:
    """A worker's training and validation shards in memory; training needs labels."""
    x_train, y_train = to_numpy(shards["train"])
    x_val, y_val = to_numpy(shards["val"]) if "val" in shards else (x_train[:0], None)
    if y_train is None:
        raise InvalidInput("the data stream has no labels (keys): supervised training needs them")
    return x_train, y_train, x_val, y_val


def _fit_shape(x: np.ndarray, shape: list[int] | None, model_name: str) -> np.ndarray:
    """Data reshaped to the model's input shape when the sizes agree, else a clear error."""
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


def _is_classes(y: np.ndarray | None) -> bool:
    return y is not None and y.dtype.kind in "iub"


def train(
    spec: RunSpec,
    shards: dict[str, Any],
    *,
    rank: int = 0,
    distributed: bool = False,
    reporter: Reporter | None = None,
) -> dict[str, Any]:
    """Train ``spec``'s model on one worker's ``shards`` (train/val/test data iterators) with
    its framework's loop. Rank 0 reports to the store (``reporter``: a Tune trial's)."""
    reporter = reporter or Reporter(spec, enabled=rank == 0)
    loop = _train_torch if spec.framework == "pytorch" else _train_keras
    return loop(spec, shards, reporter, rank, distributed)


# -- PyTorch ------------------------------------------------------------------------------
def _train_torch(spec: RunSpec, shards: dict, reporter: Reporter, rank: int, distributed: bool):
    """Train a PyTorch model with Ignite."""
    import torch
    from ignite.engine import Events, create_supervised_evaluator, create_supervised_trainer

    from kafkaml_ray._private.modelcode import build_model, check_torch_parts

    reporter.mark("imported")
    seed = spec.train_args.get("seed", 0)
    torch.manual_seed(seed)
    np.random.seed(seed)
    start = time.perf_counter()
    x_train, y_train, x_val, y_val = _train_and_val(shards)
    reporter.mark("data")
    model = build_model("pytorch", spec.code, spec.imports)
    shape = spec.input_shape or getattr(model, "input_shape", None)
    x_train, x_val = (
        _fit_shape(x_train, shape, spec.model_name),
        _fit_shape(x_val, shape, spec.model_name),
    )
    classes = _is_classes(y_train)

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
    loss_fn, optimizer, _ = check_torch_parts(model)
    if "lr" in spec.train_args:
        for group in optimizer.param_groups:
            group["lr"] = spec.train_args["lr"]
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
    reporter.mark("built")

    @trainer.on(Events.ITERATION_COMPLETED)
    def _progress(engine):
        y_pred, y = engine.state.output
        it = (engine.state.iteration - 1) % batches + 1
        if rank == 0:
            reporter.batch(engine.state.epoch, it, batches, None)

    # With several workers Ignite's metrics all-reduce as they compute, so every rank
    # evaluates (each has the whole validation and test sets) and rank 0 reports.
    @trainer.on(Events.EPOCH_COMPLETED)
    def _epoch(engine):
        train_m = dict(engine.state.metrics)
        val_m = dict(evaluator.run(val_loader).metrics) if val_loader is not None else {}
        if rank == 0:
            reporter.epoch(engine.state.epoch, train_m, val_m)

    trainer.run(train_loader, max_epochs=spec.epochs, epoch_length=batches)
    seconds = time.perf_counter() - start
    test_set: dict[str, np.ndarray] = {}

    def evaluate_test() -> dict:
        x, y = to_numpy(shards["test"]) if "test" in shards else (x_train[:0], None)
        if y is None or not len(x):
            return {}
        test_set.update(x=_fit_shape(x, shape, spec.model_name), y=y)
        return evaluator.run(loader(test_set["x"], y, False, val_bs)).metrics

    test = _on_every_rank(evaluate_test) if distributed else evaluate_test
    if rank != 0:
        return {}

    def weights() -> bytes:
        from safetensors.torch import save

        return save({k: v.detach().cpu().contiguous() for k, v in core.state_dict().items()})

    def matrix() -> list | None:
        if not (test_set and classes and out_dims and out_dims[0] > 1):
            return None
        preds = predict_torch(core, test_set["x"], device, val_bs).argmax(axis=1)
        return confusion(test_set["y"], preds, out_dims[0])

    return after_training(
        reporter,
        spec,
        weights=weights,
        weights_name="model.safetensors",
        seconds=seconds,
        test=test,
        matrix=matrix,
    )


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


def predict_torch(
    model: Any, x: np.ndarray, device: Any = None, batch_size: int = 256
) -> np.ndarray:
    import torch

    model.eval()
    outs = []
    with torch.no_grad():
        for i in range(0, len(x), batch_size):
            xb = torch.as_tensor(x[i : i + batch_size], dtype=torch.float32, device=device)
            outs.append(model(xb).cpu().numpy())
    return np.concatenate(outs) if outs else np.empty((0,))


# -- Keras --------------------------------------------------------------------------------
def _train_keras(spec: RunSpec, shards: dict, reporter: Reporter, rank: int, distributed: bool):
    """Train a Keras model with ``fit``."""
    from kafkaml_ray._private.modelcode import build_model, import_tensorflow

    import_tensorflow(with_torch=False)  # (this process trains Keras only)
    import keras

    reporter.mark("imported")
    keras.backend.clear_session()  # (a process kept warm by the pool trained before)
    seed = spec.train_args.get("seed", 0)
    keras.utils.set_random_seed(seed)
    start = time.perf_counter()
    x_train, y_train, x_val, y_val = _train_and_val(shards)
    reporter.mark("data")
    model = build_model("tensorflow", spec.code, spec.imports)  # (one worker: deploy_training)
    shape = spec.input_shape
    if shape is None:
        try:
            shape = [int(d) for d in model.input_shape[1:]]
        except (AttributeError, ValueError, TypeError):
            shape = None
    x_train, x_val = (
        _fit_shape(x_train, shape, spec.model_name),
        _fit_shape(x_val, shape, spec.model_name),
    )
    if "lr" in spec.train_args:
        model.optimizer.learning_rate.assign(spec.train_args["lr"])
    batches = spec.train_args.get("steps_per_epoch") or math.ceil(len(x_train) / spec.batch_size)

    class _Store(keras.callbacks.Callback):
        def on_train_batch_end(self, batch, logs=None):
            if rank == 0:
                reporter.batch(self._epoch, batch + 1, batches, (logs or {}).get("loss"))

        def on_epoch_begin(self, epoch, logs=None):
            self._epoch = epoch + 1

        def on_epoch_end(self, epoch, logs=None):
            logs = logs or {}
            train_m = {k: v for k, v in logs.items() if not k.startswith("val_")}
            val_m = {k[4:]: v for k, v in logs.items() if k.startswith("val_")}
            if rank == 0:
                reporter.epoch(epoch + 1, train_m, val_m)

    val_bs = spec.val_args.get("batch_size", spec.batch_size)
    reporter.mark("built")
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
            callbacks=[_Store()],
        )
    except ValueError as e:
        raise InvalidInput(f"model {spec.model_name!r} does not fit the data: {e}") from None
    seconds = time.perf_counter() - start
    if rank != 0:
        return {}
    test_set: dict[str, np.ndarray] = {}

    def weights() -> bytes:
        with tempfile.TemporaryDirectory() as tmp:
            model.save(f"{tmp}/model.keras")
            return Path(f"{tmp}/model.keras").read_bytes()

    def test() -> dict:
        x, y = to_numpy(shards["test"]) if "test" in shards else (x_train[:0], None)
        if y is None or not len(x):
            return {}
        test_set.update(x=_fit_shape(x, shape, spec.model_name), y=y)
        return model.evaluate(test_set["x"], y, batch_size=val_bs, verbose=0, return_dict=True)

    def matrix() -> list | None:
        if not (test_set and _is_classes(test_set["y"])):
            return None
        out = model.predict(test_set["x"], batch_size=val_bs, verbose=0)
        if out.ndim != 2 or out.shape[1] < 2:
            return None
        return confusion(test_set["y"], out.argmax(axis=1), out.shape[1])

    return after_training(
        reporter,
        spec,
        weights=weights,
        weights_name="model.keras",
        seconds=seconds,
        test=test,
        matrix=matrix,
    )
