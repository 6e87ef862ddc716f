"""Running registered model code: in Ray worker processes only, never in the UI or CLI.

Model code is executed after its framework's default imports and the model's own imports,
in a namespace of its own; an error in it is reported with its line in the code.
"""

from __future__ import annotations

import linecache
import traceback
from typing import Any

from kafkaml_ray.errors import ModelCodeError

__all__ = ["execute", "error_from", "defined", "limit_memory", "MODULE"]

#: the module name that model code's classes and functions carry
MODULE = "kafkaml_user_model"
_CODE, _IMPORTS = "<model code>", "<imports>"

# Keras 2 names that Kafka-ML's documented models use, and what Keras 3 calls them.
_KERAS2 = {
    "lr": " (Keras 3 calls it `learning_rate`)",
    "decay": " (Keras 3 has no `decay`: pass a learning-rate schedule as `learning_rate`)",
}


def execute(defaults: str, code: str, imports: str = "") -> dict[str, Any]:
    """What model code defines, executed after ``defaults`` and its ``imports``.

    >>> execute("import math\\n", "r = math.sqrt(16)")["r"]
    4.0
    >>> execute("", "x = 1\\ny = x +")
    Traceback (most recent call last):
    kafkaml_ray.errors.ModelCodeError: line 2: syntax error: invalid syntax
    """
    namespace: dict[str, Any] = {"__name__": MODULE}
    _run(defaults, "<defaults>", namespace)
    if imports.strip():
        _run(imports, _IMPORTS, namespace)
    _run(code, _CODE, namespace)
    return namespace


def defined(namespace: dict[str, Any]) -> dict[str, Any]:
    """The classes and functions model code defined itself, by name (what Keras needs to
    load a saved model with custom layers, losses or metrics)."""
    return {
        name: value
        for name, value in namespace.items()
        if callable(value) and getattr(value, "__module__", None) == MODULE
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
        raise error_from(e, filename) from None


def _where(filename: str) -> str:
    return "imports: " if filename == _IMPORTS else ""


def error_from(e: BaseException, filename: str | None = None) -> ModelCodeError:
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


def limit_memory(megabytes: int) -> None:
    """Cap this process's heap (RLIMIT_DATA) so runaway code fails with MemoryError."""
    import resource

    limit = megabytes * 1024 * 1024
    soft, hard = resource.getrlimit(resource.RLIMIT_DATA)
    if hard != resource.RLIM_INFINITY:
        limit = min(limit, hard)
    resource.setrlimit(resource.RLIMIT_DATA, (limit, hard))
