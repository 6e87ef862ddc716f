"""The layout stays readable: a module over 500 lines says at its top why it stays whole."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
LIMIT = 500
MODULES = sorted(
    p for d in ("kafkaml_ray", "benchmarks") for p in (ROOT / d).rglob("*.py") if p.is_file()
)


@pytest.mark.parametrize("path", MODULES, ids=lambda p: str(p.relative_to(ROOT)))
def test_a_long_module_says_why_it_stays_whole(path: Path) -> None:
    text = path.read_text()
    lines = text.count("\n")
    if lines <= LIMIT:
        return
    doc = ast.get_docstring(ast.parse(text)) or ""
    assert "Kept whole" in doc, (
        f"{path.relative_to(ROOT)} has {lines} lines: split it, or say at its top why it stays "
        "whole ('Kept whole: ...')"
    )


def test_the_rule_sees_the_modules() -> None:
    assert len(MODULES) > 40
    assert ROOT / "kafkaml_ray" / "client.py" in MODULES
