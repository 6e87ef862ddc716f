"""What the Client returns: plain pydantic records, detached from the store."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, ConfigDict

__all__ = ["ModelInfo", "ConfigurationInfo"]


class _Record(BaseModel):
    model_config = ConfigDict(from_attributes=True, frozen=True)


class ModelInfo(_Record):
    id: int
    name: str
    description: str
    framework: str
    imports: str
    code: str
    input_shape: list[Any] | None
    output_shape: list[Any] | None
    param_count: int | None
    created_at: datetime
    updated_at: datetime


class ConfigurationInfo(_Record):
    id: int
    name: str
    description: str
    model_ids: list[int]
    model_names: list[str]
    created_at: datetime

    @classmethod
    def of(cls, c: Any) -> ConfigurationInfo:
        return cls(
            id=c.id,
            name=c.name,
            description=c.description,
            created_at=c.created_at,
            model_ids=[m.id for m in c.models],
            model_names=[m.name for m in c.models],
        )
