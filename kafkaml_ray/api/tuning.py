"""Hyper-parameter searches (Ray Tune) of a model on a stored datasource."""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

from sqlalchemy import select

from kafkaml_ray import frameworks
from kafkaml_ray.api.base import Ref, Service, find, get_row, refuse_if_served, wait_done
from kafkaml_ray.errors import Conflict, InvalidInput
from kafkaml_ray.schemas import TuneInfo
from kafkaml_ray.store import (
    Datasource,
    DatasourceStatus,
    MLModel,
    ResultStatus,
    TuneRun,
    TuneStatus,
    move_result,
    move_search,
)

__all__ = ["Tuning"]


class Tuning(Service):
    """Hyper-parameter searches with Ray Tune."""

    def start(
        self,
        model: Ref,
        datasource_id: int,
        space: Mapping[str, Any],
        metric: str,
        mode: str = "max",
        num_samples: int = 4,
        max_concurrent_trials: int = 2,
    ) -> TuneInfo:
        """Search a model's hyper-parameters with Ray Tune on a stored datasource.

        ``space`` maps training arguments to samplers or fixed values, e.g.
        ``{"lr": {"loguniform": [1e-4, 1e-1]}, "batch_size": {"choice": [16, 32]},
        "epochs": 2}`` (choice, grid, uniform, loguniform, randint; see
        `kafkaml_ray.train.tune`). ``metric`` is a metric the model reports, ``val_<name>``
        for validation (``val_accuracy``, ``val_loss``); ``mode`` is "max" or "min".
        ``num_samples`` configurations are sampled (each over every ``grid`` value),
        ``max_concurrent_trials`` of them train at once, one CPU each. It returns once the
        search has started: every trial is stored as a result with ``tune_id`` set, and the
        best one is marked when the search ends (`wait_for_tune`).
        """

        from kafkaml_ray.train.tune import check_space, start_tune

        checked = check_space(space)
        if mode not in ("max", "min"):
            raise InvalidInput(f"mode must be 'max' or 'min', not {mode!r}")
        if not isinstance(metric, str) or not re.fullmatch(r"[A-Za-z_][\w.-]{0,99}", metric):
            raise InvalidInput(f"metric {metric!r} is not a metric name such as 'val_accuracy'")
        for what, n in (
            ("num_samples", num_samples),
            ("max_concurrent_trials", max_concurrent_trials),
        ):
            if not isinstance(n, int) or isinstance(n, bool) or not 1 <= n <= 10_000:
                raise InvalidInput(f"{what} must be a whole number from 1 to 10000, not {n!r}")
        self._check_cluster()
        with self.store.session() as s:
            m = find(s, MLModel, model, "model")
            if not frameworks.get(m.framework).model_params and (
                named := [k for k in checked if k.startswith("model.")]
            ):
                raise InvalidInput(
                    f"search space {named[0]!r}: a {frameworks.get(m.framework).label} model's "
                    "own parameters are set in its code; model.<parameter> is for scikit-learn "
                    "and XGBoost models"
                )
            ds = get_row(s, Datasource, datasource_id, "datasource")
            if ds.status == DatasourceStatus.REFUSED or not ds.topic:
                raise InvalidInput(f"datasource {ds.id} was refused: it names no data to tune on")
            if ds.message.get("incremental"):
                raise InvalidInput(
                    f"datasource {ds.id} is an online stream: it has no fixed ranges to tune on"
                )
            run = TuneRun(
                model_id=m.id,
                datasource_id=ds.id,
                space=checked,
                metric=metric,
                mode=mode,
                num_samples=num_samples,
            )
            s.add(run)
            s.flush()
            tune_id = run.id
        try:
            start_tune(self.settings, tune_id, max_concurrent_trials)
        except Exception as e:
            with self.store.session() as s:
                move_search(s, tune_id, TuneStatus.FAILED, f"the search did not start: {e}")
            raise
        return self.get(tune_id)

    def list(self) -> list[TuneInfo]:
        with self.store.session() as s:
            return [TuneInfo.of(t) for t in s.scalars(select(TuneRun).order_by(TuneRun.id))]

    def get(self, tune_id: int) -> TuneInfo:
        """A search with its trials (as results) and its best result's id once done."""
        with self.store.session() as s:
            return TuneInfo.of(get_row(s, TuneRun, tune_id, "tune run"))

    def stop(self, tune_id: int) -> TuneInfo:
        """Stop a search: its running trials are stopped (their Ray resources freed), the
        finished ones kept, the best of them marked."""
        from kafkaml_ray.train.tune import stop_tune

        if (run := self.get(tune_id)).done:
            return run
        # Stopped first: the trials being stopped write nothing more.
        with self.store.session() as s:
            move_search(s, tune_id, TuneStatus.STOPPED, "stopped by the user")
            for r in s.get_one(TuneRun, tune_id).results:
                move_result(s, r.id, ResultStatus.STOPPED, error="stopped by the user")
        stop_tune(self.settings, tune_id)
        return self.get(tune_id)

    def delete(self, tune_id: int) -> None:
        """Delete a search and its trials' results; refused while it runs (stop it first)
        or while an inference serves one of its trials."""
        with self.store.session() as s:
            run = get_row(s, TuneRun, tune_id, "tune run")
            if run.status == TuneStatus.RUNNING:
                raise Conflict(f"tune run {tune_id} is running: stop it first")
            ids = [r.id for r in run.results]
            refuse_if_served(s, ids)
            s.delete(run)  # its results with it
        self.client.results.delete_artifacts(ids)

    def wait(self, tune_id: int, timeout: float = 600) -> TuneInfo:
        """Block until the search is finished or failed."""
        return wait_done(lambda: self.get(tune_id), f"tune run {tune_id}", timeout)
