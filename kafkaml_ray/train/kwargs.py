"""Training and validation arguments as Kafka-ML takes them: ``"epochs=5, lr=0.001"``.

Parsed safely: the text is read as call arguments by :mod:`ast`, each value with
``ast.literal_eval`` (literals only: numbers, strings, booleans, None, lists, tuples,
dicts); nothing is evaluated. Names are checked against what the framework accepts.

>>> parse_kwargs("epochs=5, lr=0.001, shuffle=True", "train")
{'epochs': 5, 'lr': 0.001, 'shuffle': True}
>>> parse_kwargs("max_epochs=3", "train")  # Kafka-ML's PyTorch (Ignite) spelling
{'epochs': 3}
>>> parse_kwargs("epochs=2, steps_per_epoch=10, shuffle=False", "train")  # and its Keras one
{'epochs': 2, 'steps_per_epoch': 10, 'shuffle': False}
>>> parse_kwargs("epochs=__import__('os')", "train")
Traceback (most recent call last):
...
kafkaml_ray.errors.InvalidInput: training argument epochs: __import__('os') is not a literal value
"""

from __future__ import annotations

import ast
from collections.abc import Mapping
from typing import Any, Literal

from kafkaml_ray.errors import InvalidInput

__all__ = ["parse_kwargs", "TRAIN_ARGS", "VAL_ARGS", "ALIASES"]

Kind = Literal["train", "val"]

# name: (types, check, what it means)
TRAIN_ARGS: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "epochs": ((int,), lambda v: 1 <= v <= 100_000, "number of epochs (1 or more)"),
    "lr": ((int, float), lambda v: 0 < v < 10, "learning rate, overriding the model's optimizer"),
    "shuffle": ((bool,), None, "shuffle the training data every epoch"),
    "seed": ((int,), lambda v: v >= 0, "random seed"),
    "num_workers": ((int,), lambda v: 1 <= v <= 1024, "Ray Train workers (data parallel)"),
    "steps_per_epoch": ((int,), lambda v: v >= 1, "batches per epoch (default: all of them)"),
}
VAL_ARGS: dict[str, tuple[tuple[type, ...], Any, str]] = {
    "batch_size": ((int,), lambda v: v >= 1, "batch size of validation and test"),
}
# Kafka-ML's documented spellings (Keras's and Ignite's) of the same arguments.
ALIASES = {"max_epochs": "epochs", "learning_rate": "lr", "epoch_length": "steps_per_epoch"}


def _source(node: ast.AST) -> str:
    try:
        return ast.unparse(node)[:200]
    except RecursionError:
        return "the value"


def parse_kwargs(text: str | Mapping[str, Any] | None, kind: Kind = "train") -> dict[str, Any]:
    """Parse and check ``text`` (or a dict); :class:`InvalidInput` names what is wrong."""
    allowed = TRAIN_ARGS if kind == "train" else VAL_ARGS
    what = "training argument" if kind == "train" else "validation argument"
    if text is None or (isinstance(text, str) and not text.strip()):
        return {}
    if isinstance(text, Mapping):
        values = dict(text)
    else:
        form = f"{what}s {text[:200]!r} are not of the form name=value, name=value"
        if not isinstance(text, str) or len(text) > 10_000:
            raise InvalidInput(form)
        try:
            call = ast.parse(f"f({text})", mode="eval").body
        except (SyntaxError, ValueError, RecursionError, MemoryError):
            raise InvalidInput(form) from None
        # "epochs=5), (1" parses as a tuple: only one call f(name=value, ...) is arguments.
        if not (isinstance(call, ast.Call) and isinstance(call.func, ast.Name)):
            raise InvalidInput(form)
        if call.func.id != "f" or call.args:
            raise InvalidInput(f"{what}s {text[:200]!r}: every value needs a name (name=value)")
        values = {}
        for kw in call.keywords:
            if kw.arg is None:
                raise InvalidInput(f"{what}s {text[:200]!r}: '**' is not allowed")
            try:
                values[kw.arg] = ast.literal_eval(kw.value)
            except (ValueError, TypeError, SyntaxError, RecursionError, MemoryError):
                raise InvalidInput(
                    f"{what} {kw.arg}: {_source(kw.value)} is not a literal value"
                ) from None
    out = {}
    for name, value in values.items():
        key = ALIASES.get(name, name)
        if key not in allowed:
            known = ", ".join(sorted(allowed))
            raise InvalidInput(f"unknown {what} {name!r}; known: {known}")
        types, check, meaning = allowed[key]
        ok = isinstance(value, types) and not (isinstance(value, bool) and bool not in types)
        if not ok or (check is not None and not check(value)):
            raise InvalidInput(f"{what} {name}={repr(value)[:80]} is not valid: {meaning}")
        out[key] = value
    return out
