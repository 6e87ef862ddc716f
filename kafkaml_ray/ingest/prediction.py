"""The prediction message an inference writes to its output topic, one per input, as
Kafka-ML's inference does: ``{"values": [...]}`` (the model's outputs for that sample).

>>> prediction_message([0.25, 0.75])
b'{"values":[0.25,0.75]}'
>>> prediction_values(b'{"values": [0.25, 0.75]}')
[0.25, 0.75]
>>> prediction_values(b"garbage")
Traceback (most recent call last):
ValueError: not a prediction message ({"values": [...]}): garbage
"""

from __future__ import annotations

from typing import Any

import orjson

__all__ = ["prediction_message", "prediction_values"]


def prediction_message(values: Any) -> bytes:
    """The message for one sample's outputs (numbers, or nested lists of them)."""
    return orjson.dumps({"values": values})


def prediction_values(value: bytes | None) -> Any:
    """The outputs a prediction message holds; ValueError for anything else."""
    try:
        return orjson.loads(value or b"")["values"]
    except (orjson.JSONDecodeError, KeyError, TypeError):
        shown = (value or b"")[:80].decode("utf-8", "replace")
        raise ValueError(f'not a prediction message ({{"values": [...]}}): {shown}') from None
