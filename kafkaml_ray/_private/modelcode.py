"""Building user model code. Runs only inside Ray worker processes, never in the UI or CLI.

Model code is Kafka-ML's: for ``tensorflow`` code that defines a compiled Keras ``model``;
for ``pytorch`` an ``nn.Module`` class with ``loss_fn()``, ``optimizer()`` and ``metrics()``
(a dict of Ignite metrics), either instantiated as ``model`` or defined once (then it is
instantiated without arguments). An optional ``input_shape`` attribute (without the batch
dimension) tells the shape of one sample; otherwise it is read off the first layer.
"""

from __future__ import annotations

import contextlib
import linecache
import os
import sys
import traceback
from typing import Any

from kafkaml_ray.errors import ModelCodeError

__all__ = ["build_model", "custom_objects", "describe_model", "Framework"]

Framework = str  # "pytorch" | "tensorflow"
_CODE, _IMPORTS = "<model code>", "<imports>"

_DEFAULTS = {
    "pytorch": (
        "import torch\nfrom torch import nn\nimport torch.nn.functional as F\n"
        "from ignite.metrics import *\n"
    ),
    "tensorflow": "import tensorflow as tf\nimport keras\nfrom keras import layers\n",
}


def _run(source: str, filename: str, namespace: dict[str, Any]) -> None:
    try:
        compiled = compile(source, filename, "exec")
    except SyntaxError as e:
        raise ModelCodeError(f"{_where(filename)}syntax error: {e.msg}", e.lineno) from None
    linecache.cache[filename] = (len(source), None, source.splitlines(True), filename)
    try:
        exec(compiled, namespace)  # noqa: S102 - registered model code, in a Ray worker
    except ModelCodeError:
        raise
    except BaseException as e:  # noqa: BLE001 - any failure of user code is reported
        raise _error_from(e, filename) from None


def _where(filename: str) -> str:
    return "imports: " if filename == _IMPORTS else ""


def _error_from(e: BaseException, filename: str | None = None) -> ModelCodeError:
    """The error of user code, with the last line of it in the traceback."""
    line, where = None, filename
    for frame in traceback.extract_tb(e.__traceback__):
        if frame.filename in (_CODE, _IMPORTS):
            line, where = frame.lineno, frame.filename
    if isinstance(e, MemoryError):
        text = "MemoryError: the model code ran out of memory"
    elif isinstance(e, ModuleNotFoundError):
        text = f"ModuleNotFoundError: no module named {e.name!r}"
    else:
        text = f"{type(e).__name__}: {e}"
        text += "".join(
            hint
            for name, hint in _KERAS2.items()
            if f"'{name}'" in text and ("not recognized" in text or "unexpected keyword" in text)
        )
    return ModelCodeError(f"{_where(where or '')}{text}", line)


# Keras 2 names that Kafka-ML's documented models use, and what Keras 3 calls them.
_KERAS2 = {
    "lr": " (Keras 3 calls it `learning_rate`)",
    "decay": " (Keras 3 has no `decay`: pass a learning-rate schedule as `learning_rate`)",
}


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


def _namespace(framework: Framework, code: str, imports: str) -> dict[str, Any]:
    """What model code defines, executed."""
    if framework == "tensorflow":
        import_tensorflow()
    if framework not in _DEFAULTS:
        raise ModelCodeError(f"unknown framework {framework!r}: use 'pytorch' or 'tensorflow'")
    namespace: dict[str, Any] = {"__name__": _MODULE}
    _run(_DEFAULTS[framework], "<defaults>", namespace)
    if imports.strip():
        _run(imports, _IMPORTS, namespace)
    _run(code, _CODE, namespace)
    return namespace


_MODULE = "kafkaml_user_model"


def build_model(framework: Framework, code: str, imports: str = "") -> Any:
    """Execute model code and return the model it defines (a torch module or Keras model)."""
    namespace = _namespace(framework, code, imports)
    return _torch_model(namespace) if framework == "pytorch" else _keras_model(namespace)


def custom_objects(framework: Framework, code: str, imports: str = "") -> dict[str, Any]:
    """The classes and functions model code defines, by name: what Keras needs to load a
    saved model with custom layers, losses or metrics."""
    return {
        name: value
        for name, value in _namespace(framework, code, imports).items()
        if callable(value) and getattr(value, "__module__", None) == _MODULE
    }


def _torch_model(ns: dict[str, Any]) -> Any:
    from torch import nn

    model = ns.get("model")
    if not isinstance(model, nn.Module):
        classes = [
            v
            for v in ns.values()
            if isinstance(v, type) and issubclass(v, nn.Module) and v.__module__ == _MODULE
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
            raise _error_from(e) from None
    for method in ("loss_fn", "optimizer", "metrics"):
        if not callable(getattr(model, method, None)):
            raise ModelCodeError(
                f"the PyTorch model {type(model).__name__} has no {method}() method; Kafka-ML "
                "models define loss_fn(), optimizer() and metrics()"
            )
    return model


def check_torch_parts(model: Any) -> tuple[Any, Any, dict[str, Any]]:
    """Call loss_fn(), optimizer(), metrics() and check what they return."""
    import torch
    from ignite.metrics import Metric

    try:
        loss_fn, optimizer, metrics = model.loss_fn(), model.optimizer(), model.metrics()
    except BaseException as e:  # noqa: BLE001
        raise _error_from(e) from None
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


def _keras_model(ns: dict[str, Any]) -> Any:
    import keras

    model = ns.get("model")
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


def input_shape(framework: Framework, model: Any) -> list[int] | None:
    """One sample's shape, or None when the model does not say."""
    declared = getattr(model, "input_shape", None)
    if framework == "tensorflow":
        try:
            shape = declared if declared is not None else model.input_shape
        except (AttributeError, ValueError):
            return None
        if isinstance(shape, list):  # several inputs: not supported by Kafka-ML either
            shape = shape[0]
        return [int(d) for d in shape[1:]] if shape is not None else None
    if declared is not None:
        return [int(d) for d in declared]
    from torch import nn

    for module in model.modules():
        if isinstance(module, nn.Linear):
            return [module.in_features]
        if isinstance(module, nn.Conv1d | nn.Conv2d | nn.Conv3d | nn.Flatten):
            return None  # spatial size unknown
    return None


def describe_model(framework: Framework, code: str, imports: str = "") -> dict[str, Any]:
    """Build the model, check it, and return its shapes and parameter count."""
    model = build_model(framework, code, imports)
    shape = input_shape(framework, model)
    if framework == "pytorch":
        import torch

        _, _, metrics = check_torch_parts(model)
        names = sorted(str(k) for k in metrics)  # (what each epoch and window reports)
        params = sum(p.numel() for p in model.parameters())
        out_shape = None
        if shape is not None:
            model.eval()
            try:
                with torch.no_grad():
                    out = model(torch.zeros(2, *shape))
            except BaseException as e:  # noqa: BLE001
                raise ModelCodeError(
                    f"forward() fails on an input of shape {shape}: {_error_from(e)}"
                ) from None
            out_shape = [int(d) for d in out.shape[1:]]
    else:
        names = None  # (Keras names its compiled metrics when it first evaluates)
        params = int(model.count_params())
        try:
            out = model.output_shape
            out_shape = [int(d) for d in out[1:]]
        except (AttributeError, ValueError):
            out_shape = None
    return {
        "input_shape": shape,
        "output_shape": out_shape,
        "param_count": int(params),
        "metrics": names,
    }


def limit_memory(megabytes: int) -> None:
    """Cap this process's heap (RLIMIT_DATA) so runaway code fails with MemoryError."""
    import resource

    limit = megabytes * 1024 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
