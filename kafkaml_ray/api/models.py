"""Models (registered code, validated in Ray workers, and its versions) and configurations
(models trained and compared together)."""

from __future__ import annotations

from collections.abc import Sequence

from sqlalchemy import select

from kafkaml_ray import frameworks
from kafkaml_ray.api.base import Ref, Service, checked_name, find, flush
from kafkaml_ray.errors import Conflict, InvalidInput, NotFound
from kafkaml_ray.model_code import validate_model
from kafkaml_ray.schemas import ConfigurationInfo, ModelInfo, ModelVersionInfo
from kafkaml_ray.store import Configuration, MLModel, ModelVersion

__all__ = ["Models", "Configurations"]


class Models(Service):
    """Model code: register (validated in a Ray worker), update (a new version), list, show,
    delete."""

    def add(
        self, name: str, framework: str, code: str, imports: str = "", description: str = ""
    ) -> ModelInfo:
        """Validate model code in a Ray worker, then register it; nothing is stored if it
        does not build (:class:`~kafkaml_ray.errors.ModelCodeError`)."""
        name = checked_name(name, "model")
        frameworks.get(framework)  # (an unknown one is refused before anything else)
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
            flush(s, f"a model named {name!r} exists already")
            return ModelInfo.model_validate(row)

    def update(
        self,
        ref: Ref,
        *,
        name: str | None = None,
        code: str | None = None,
        imports: str | None = None,
        description: str | None = None,
    ) -> ModelInfo:
        """Change a model; new code is validated first, as in `add_model`."""
        current = self.get(ref)
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
                row.name = checked_name(name, "model")
            for field, value in (
                ("code", code),
                ("imports", imports),
                ("description", description),
            ):
                if value is not None:
                    setattr(row, field, value)
            for field, value in found.items():
                setattr(row, field, value)
            flush(s, f"a model named {name!r} exists already")
            return ModelInfo.model_validate(row)

    def list(self) -> list[ModelInfo]:
        with self.store.session() as s:
            return [
                ModelInfo.model_validate(m) for m in s.scalars(select(MLModel).order_by(MLModel.id))
            ]

    def get(self, ref: Ref) -> ModelInfo:
        with self.store.session() as s:
            return ModelInfo.model_validate(find(s, MLModel, ref, "model"))

    def versions(self, ref: Ref) -> list[ModelVersionInfo]:
        """Every version of a model's code that a result trained (or will train) with,
        oldest first; updating a model's code adds one when it is next deployed."""
        with self.store.session() as s:
            m = find(s, MLModel, ref, "model")
            mine = select(ModelVersion).where(ModelVersion.model_id == m.id)
            rows = s.scalars(mine.order_by(ModelVersion.number))
            return [ModelVersionInfo.model_validate(v) for v in rows]

    def version(self, ref: Ref, number: int) -> ModelVersionInfo:
        """Version ``number`` of a model's code (a result's ``model_version``)."""
        for v in self.versions(ref):
            if v.number == number:
                return v
        raise NotFound(f"model {ref!r} has no version {number}")

    def delete(self, ref: Ref) -> None:
        """Delete a model; refused while a configuration uses it."""
        with self.store.session() as s:
            row = find(s, MLModel, ref, "model")
            if row.configurations:
                names = ", ".join(repr(c.name) for c in row.configurations)
                raise Conflict(
                    f"model {row.name!r} is used by configuration {names}: delete or change "
                    "the configuration first"
                )
            s.delete(row)


class Configurations(Service):
    """Named sets of models, trained and compared together."""

    def create(self, name: str, models: Sequence[Ref], description: str = "") -> ConfigurationInfo:
        """Group registered models (of any framework) to train them together."""
        name = checked_name(name, "configuration")
        with self.store.session() as s:
            rows = _models(s, models)
            config = Configuration(name=name, description=description, models=rows)
            s.add(config)
            flush(s, f"a configuration named {name!r} exists already")
            return ConfigurationInfo.of(config)

    def update(
        self,
        ref: Ref,
        *,
        name: str | None = None,
        models: Sequence[Ref] | None = None,
        description: str | None = None,
    ) -> ConfigurationInfo:
        with self.store.session() as s:
            config = find(s, Configuration, ref, "configuration")
            if name is not None:
                config.name = checked_name(name, "configuration")
            if description is not None:
                config.description = description
            if models is not None:
                config.models = _models(s, models)
            flush(s, f"a configuration named {name!r} exists already")
            return ConfigurationInfo.of(config)

    def list(self) -> list[ConfigurationInfo]:
        with self.store.session() as s:
            rows = s.scalars(select(Configuration).order_by(Configuration.id))
            return [ConfigurationInfo.of(c) for c in rows]

    def get(self, ref: Ref) -> ConfigurationInfo:
        with self.store.session() as s:
            return ConfigurationInfo.of(find(s, Configuration, ref, "configuration"))

    def delete(self, ref: Ref) -> None:
        with self.store.session() as s:
            s.delete(find(s, Configuration, ref, "configuration"))


def _models(s, refs: Sequence[Ref]) -> list[MLModel]:
    if not refs:
        raise InvalidInput("a configuration needs at least one model")
    rows = [find(s, MLModel, r, "model") for r in refs]
    return list({m.id: m for m in rows}.values())
