"""The Python API: every action of the CLI and the control panel goes through `Client`.

>>> from kafkaml_ray import Client, Settings
>>> client = Client(Settings(home="/tmp/kml-doctest", db="sqlite://"))
>>> client.list_models()
[]
"""

from __future__ import annotations

import logging
from collections.abc import Sequence

from sqlalchemy import select
from sqlalchemy.exc import IntegrityError

from kafkaml_ray.errors import Conflict, InvalidInput, NotFound
from kafkaml_ray.registry import FRAMEWORKS, validate_model
from kafkaml_ray.schemas import ConfigurationInfo, ModelInfo
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import Configuration, MLModel, Store

__all__ = ["Client"]

logger = logging.getLogger(__name__)

Ref = int | str  # an id, or a name


class Client:
    """Models, configurations and (in later sections) training, datasources and inference."""

    def __init__(self, settings: Settings | None = None, store: Store | None = None):
        self.settings = settings or Settings.from_env()
        self.store = store or Store(self.settings.db_url)

    # -- models ------------------------------------------------------------------------
    def add_model(
        self, name: str, framework: str, code: str, imports: str = "", description: str = ""
    ) -> ModelInfo:
        """Validate model code in a Ray worker, then register it; nothing is stored if it
        does not build (:class:`~kafkaml_ray.errors.ModelCodeError`)."""
        name = _name(name, "model")
        if framework not in FRAMEWORKS:
            raise InvalidInput(f"unknown framework {framework!r}: use 'pytorch' or 'tensorflow'")
        with self.store.session() as s:
            if s.scalar(select(MLModel.id).where(MLModel.name == name)) is not None:
                raise Conflict(f"a model named {name!r} exists already")
        found = validate_model(framework, code, imports, self.settings)
        row = MLModel(
            name=name,
            framework=framework,
            code=code,
            imports=imports,
            description=description,
            **found,
        )
        with self.store.session() as s:
            s.add(row)
            _flush(s, f"a model named {name!r} exists already")
            return ModelInfo.model_validate(row)

    def update_model(
        self,
        ref: Ref,
        *,
        name: str | None = None,
        code: str | None = None,
        imports: str | None = None,
        description: str | None = None,
    ) -> ModelInfo:
        """Change a model; new code is validated first, as in `add_model`."""
        current = self.get_model(ref)
        found = {}
        if code is not None or imports is not None:
            found = validate_model(
                current.framework,
                current.code if code is None else code,
                current.imports if imports is None else imports,
                self.settings,
            )
        with self.store.session() as s:
            row = s.get_one(MLModel, current.id)
            if name is not None:
                row.name = _name(name, "model")
            for field, value in (
                ("code", code),
                ("imports", imports),
                ("description", description),
            ):
                if value is not None:
                    setattr(row, field, value)
            for field, value in found.items():
                setattr(row, field, value)
            _flush(s, f"a model named {name!r} exists already")
            return ModelInfo.model_validate(row)

    def list_models(self) -> list[ModelInfo]:
        with self.store.session() as s:
            return [
                ModelInfo.model_validate(m) for m in s.scalars(select(MLModel).order_by(MLModel.id))
            ]

    def get_model(self, ref: Ref) -> ModelInfo:
        with self.store.session() as s:
            return ModelInfo.model_validate(_find(s, MLModel, ref, "model"))

    def delete_model(self, ref: Ref) -> None:
        """Delete a model; refused while a configuration uses it."""
        with self.store.session() as s:
            row = _find(s, MLModel, ref, "model")
            if row.configurations:
                names = ", ".join(repr(c.name) for c in row.configurations)
                raise Conflict(
                    f"model {row.name!r} is used by configuration {names}: delete or change "
                    "the configuration first"
                )
            s.delete(row)

    # -- configurations ----------------------------------------------------------------
    def create_configuration(
        self, name: str, models: Sequence[Ref], description: str = ""
    ) -> ConfigurationInfo:
        """Group registered models (of either framework) to train them together."""
        name = _name(name, "configuration")
        with self.store.session() as s:
            rows = _models(s, models)
            config = Configuration(name=name, description=description, models=rows)
            s.add(config)
            _flush(s, f"a configuration named {name!r} exists already")
            return ConfigurationInfo.of(config)

    def update_configuration(
        self,
        ref: Ref,
        *,
        name: str | None = None,
        models: Sequence[Ref] | None = None,
        description: str | None = None,
    ) -> ConfigurationInfo:
        with self.store.session() as s:
            config = _find(s, Configuration, ref, "configuration")
            if name is not None:
                config.name = _name(name, "configuration")
            if description is not None:
                config.description = description
            if models is not None:
                config.models = _models(s, models)
            _flush(s, f"a configuration named {name!r} exists already")
            return ConfigurationInfo.of(config)

    def list_configurations(self) -> list[ConfigurationInfo]:
        with self.store.session() as s:
            rows = s.scalars(select(Configuration).order_by(Configuration.id))
            return [ConfigurationInfo.of(c) for c in rows]

    def get_configuration(self, ref: Ref) -> ConfigurationInfo:
        with self.store.session() as s:
            return ConfigurationInfo.of(_find(s, Configuration, ref, "configuration"))

    def delete_configuration(self, ref: Ref) -> None:
        with self.store.session() as s:
            s.delete(_find(s, Configuration, ref, "configuration"))


def _name(name: str, what: str) -> str:
    name = (name or "").strip()
    if not name or len(name) > 200:
        raise InvalidInput(f"a {what} name must have 1 to 200 characters")
    if name.isdigit():
        raise InvalidInput(f"a {what} name cannot be a number (numbers are ids): {name!r}")
    return name


def _find(s, table, ref: Ref, what: str):
    if isinstance(ref, int) or (isinstance(ref, str) and ref.isdigit()):
        row = s.get(table, int(ref))
    else:
        row = s.scalar(select(table).where(table.name == ref))
    if row is None:
        raise NotFound(f"no {what} with id or name {ref!r}")
    return row


def _models(s, refs: Sequence[Ref]) -> list[MLModel]:
    if not refs:
        raise InvalidInput("a configuration needs at least one model")
    rows = [_find(s, MLModel, r, "model") for r in refs]
    return list({m.id: m for m in rows}.values())


def _flush(s, duplicate: str) -> None:
    try:
        s.flush()
    except IntegrityError:
        raise Conflict(duplicate) from None
