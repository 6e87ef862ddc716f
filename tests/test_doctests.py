"""The examples in docstrings run and say what they print."""

import doctest
import importlib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
MODULES = sorted(
    ".".join(p.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
    for p in (ROOT / "kafkaml_ray").rglob("*.py")
    if ">>>" in p.read_text() and p.name != "app.py"
)


def test_there_are_examples():
    assert {"kafkaml_ray.settings", "kafkaml_ray.serve.autoscale"} <= set(MODULES)


@pytest.mark.parametrize("name", MODULES)
def test_docstring_examples(name):
    result = doctest.testmod(importlib.import_module(name))
    assert result.attempted > 0 and result.failed == 0
