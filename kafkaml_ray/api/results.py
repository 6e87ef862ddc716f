"""Training results: list and filter, tag and annotate, lineage, online windows and versions,
weights, predictions, delete."""

from __future__ import annotations

import re
from typing import Any

from sqlalchemy import select

from kafkaml_ray import frameworks
from kafkaml_ray.api.base import Service, get_row, refuse_if_served
from kafkaml_ray.errors import Conflict, InvalidInput, NotFound
from kafkaml_ray.options import checked
from kafkaml_ray.results import ResultFilter
from kafkaml_ray.schemas import LineageInfo, ResultInfo, VersionInfo, WindowInfo
from kafkaml_ray.store import OnlineWindow, ResultStatus, ResultVersion, TrainingResult

__all__ = ["Results"]


class Results(Service):
    """What trainings produced."""

    def list(self, deployment_id: int | None = None, **filters: Any) -> list[ResultInfo]:
        """The results, oldest first, that match every one of ``filters``
        (`~kafkaml_ray.results.ResultFilter`: ``datasource_id``, ``topic``, ``model``,
        ``code_version``, ``framework``, ``status``, ``params={"lr": 0.01}``,
        ``metrics={"test_accuracy": (0.9, None)}``, ``tag``, ``text``, ``tune_id``)."""
        wanted: ResultFilter = checked(ResultFilter, deployment_id=deployment_id, **filters)
        with self.store.session() as s:
            q = select(TrainingResult).order_by(TrainingResult.id)
            if deployment_id is not None:
                q = q.where(TrainingResult.deployment_id == deployment_id)
            infos = (ResultInfo.of(r) for r in s.scalars(q))
            return [r for r in infos if wanted.matches(r)]

    def get(self, result_id: int) -> ResultInfo:
        with self.store.session() as s:
            return ResultInfo.of(get_row(s, TrainingResult, result_id, "training result"))

    def tag(self, result_id: int, *tags: str, remove: bool = False) -> ResultInfo:
        """Add ``tags`` to a result (or ``remove`` them); `list_results` finds results by tag."""
        for tag in tags:
            if not isinstance(tag, str) or not re.fullmatch(r"[\w][\w .:/+-]{0,49}", tag):
                raise InvalidInput(
                    f"tag {tag!r}: 1 to 50 letters, digits, spaces or . : / + - _ "
                    "(starting with a letter, digit or _)"
                )
        with self.store.session() as s:
            row = get_row(s, TrainingResult, result_id, "training result")
            old = list(row.tags or [])
            row.tags = (
                [t for t in old if t not in tags] if remove else list(dict.fromkeys(old + [*tags]))
            )
        return self.get(result_id)

    def set_notes(self, result_id: int, notes: str) -> ResultInfo:
        """Replace a result's notes (free text, up to 10,000 characters)."""
        if not isinstance(notes, str) or len(notes) > 10_000:
            raise InvalidInput("notes must be text of at most 10,000 characters")
        with self.store.session() as s:
            get_row(s, TrainingResult, result_id, "training result").notes = notes
        return self.get(result_id)

    def lineage(self, result_id: int) -> LineageInfo:
        """A result with everything it links to: its datasource, its deployment or Tune
        search, its published versions, the inferences that served it, its reproductions."""
        from kafkaml_ray.lineage import tree

        with self.store.session() as s:
            return LineageInfo(**tree(s, get_row(s, TrainingResult, result_id, "training result")))

    def list_online(self) -> list[ResultInfo]:
        """The results trained online (with at least one window), oldest first."""
        with self.store.session() as s:
            online = select(OnlineWindow.result_id).distinct()
            q = select(TrainingResult).where(TrainingResult.id.in_(online))
            return [ResultInfo.of(r) for r in s.scalars(q.order_by(TrainingResult.id))]

    def windows(self, result_id: int) -> list[WindowInfo]:
        """An online result's windows, oldest first: the learning curve over the stream."""
        with self.store.session() as s:
            get_row(s, TrainingResult, result_id, "training result")
            q = select(OnlineWindow).where(OnlineWindow.result_id == result_id)
            return [
                WindowInfo.model_validate(w) for w in s.scalars(q.order_by(OnlineWindow.window))
            ]

    def versions(self, result_id: int) -> list[VersionInfo]:
        """An online result's published versions, oldest first."""
        with self.store.session() as s:
            get_row(s, TrainingResult, result_id, "training result")
            q = select(ResultVersion).where(ResultVersion.result_id == result_id)
            return [
                VersionInfo.model_validate(v) for v in s.scalars(q.order_by(ResultVersion.version))
            ]

    def delete(self, result_id: int) -> None:
        """Delete a result and its artifacts; refused while it trains (stop it first) or
        while an inference serves it (delete that first)."""
        with self.store.session() as s:
            row = get_row(s, TrainingResult, result_id, "training result")
            if row.status in (ResultStatus.TRAINING,):
                raise Conflict(f"result {result_id} is training: stop its deployment first")
            refuse_if_served(s, [result_id])
            s.delete(row)
        self.delete_artifacts([result_id])

    def delete_artifacts(self, result_ids: list[int]) -> None:
        from kafkaml_ray import artifacts

        for i in result_ids:
            artifacts.delete_tree(artifacts.join(self.settings.artifacts_uri, f"results/{i}"))

    def download_weights(self, result_id: int, version: int | None = None) -> tuple[str, bytes]:
        """The trained weights as ``(file name, bytes)``: safetensors or ``.keras``; of an
        online result, its newest published version or ``version``."""
        from kafkaml_ray import artifacts

        with self.store.session() as s:  # (the URIs as stored: with their credentials)
            r = get_row(s, TrainingResult, result_id, "training result")
            uri, status = r.weights_uri, r.status.value
            if version is not None:
                q = select(ResultVersion.weights_uri).where(
                    ResultVersion.result_id == result_id, ResultVersion.version == version
                )
                uri = s.scalar(q)
                if uri is None:
                    raise NotFound(f"result {result_id} has no version {version}")
        if not uri:
            raise NotFound(f"result {result_id} has no weights (status {status})")
        return uri.rsplit("/", 1)[-1], artifacts.get(uri)

    def predict(self, result_id: int, data: Any) -> Any:
        """Predictions of a trained result for a batch of samples (computed in a Ray task)."""
        import ray

        from kafkaml_ray._private.rayutil import ensure_ray

        with self.store.session() as s:
            r = get_row(s, TrainingResult, result_id, "training result")
            if not r.weights_uri:
                raise NotFound(f"result {result_id} has no weights (status {r.status})")
            trained = frameworks.TrainedModel.of(r)
        ensure_ray(self.settings)
        self._check_cluster()
        task = ray.remote(num_cpus=1, max_calls=1)(_predict)
        out = ray.get(task.remote(trained, data))
        if isinstance(out, str):
            raise InvalidInput(f"result {result_id} cannot predict this data: {out}")
        import numpy as np

        values, dtype, shape = out
        return np.frombuffer(values, dtype=np.dtype(dtype)).reshape(shape)


def _predict(trained: frameworks.TrainedModel, data) -> tuple[bytes, str, list[int]] | str:
    """The predictions as plain bytes, dtype and shape, or the error as text: nothing that
    model code made reaches the caller's process, where unpickling it could run its code
    (an object's ``__reduce__``, a user-defined exception)."""
    import numpy as np

    try:
        out = np.asarray(trained.load().predict(data))
        if out.dtype.kind not in "biuf":
            return f"the model returned {out.dtype} values, not numbers"
        return out.tobytes(), str(out.dtype.str), [int(d) for d in out.shape]
    except BaseException as e:  # noqa: BLE001 - returned as text, never as the object
        return f"{type(e).__name__}: {e}"
