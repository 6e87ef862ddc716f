"""Machine-learning frameworks as plug-ins: one adapter per framework behind one protocol
(`base.Framework`), found by the name a model is registered with.

>>> names()
('pytorch', 'tensorflow', 'sklearn', 'xgboost')
>>> get("pytorch").weights_name
'model.safetensors'
>>> get("caffe")  # doctest: +ELLIPSIS
Traceback (most recent call last):
kafkaml_ray.errors.ModelCodeError: unknown framework 'caffe': use one of pytorch, ...

A new framework is one module here with a `base.Framework` subclass, added to ``_ALL``.
"""

from __future__ import annotations

from kafkaml_ray.errors import ModelCodeError
from kafkaml_ray.frameworks.base import Fitted, Framework, Learner
from kafkaml_ray.frameworks.keras import Keras
from kafkaml_ray.frameworks.sklearn import ScikitLearn
from kafkaml_ray.frameworks.torch import PyTorch
from kafkaml_ray.frameworks.trained_model import Loaded, TrainedModel
from kafkaml_ray.frameworks.xgboost import XGBoost

__all__ = ["get", "names", "Framework", "Fitted", "Learner", "TrainedModel", "Loaded"]

_ALL: dict[str, Framework] = {f.name: f for f in (PyTorch(), Keras(), ScikitLearn(), XGBoost())}


def names() -> tuple[str, ...]:
    """Every framework's name, in the order the panel and ``--help`` show them."""
    return tuple(_ALL)


def get(name: str) -> Framework:
    """The adapter of the framework called ``name``."""
    try:
        return _ALL[name]
    except KeyError:
        raise ModelCodeError(f"unknown framework {name!r}: use one of {', '.join(_ALL)}") from None
