"""Hyper-parameter search with Ray Tune over one registered model on a stored datasource.

A search space is a JSON object: each key a training argument (``lr``, ``epochs``,
``batch_size``, ``seed``, ``shuffle``) or, for a framework that sets its model's own
parameters by name (scikit-learn, XGBoost), ``model.<parameter>`` (``model.alpha``,
``model.max_depth``, ``model.sgdclassifier__alpha`` in a pipeline); each value a sampler or
a fixed value:

- ``{"choice": [16, 32]}``: one of the values, at random
- ``{"grid": [1, 2, 3]}``: every value (multiplies the number of trials)
- ``{"uniform": [lo, hi]}``, ``{"loguniform": [lo, hi]}``: a float between the bounds
- ``{"randint": [lo, hi]}``: a whole number, ``lo`` included, ``hi`` excluded (as in Ray Tune)
- a plain value (``2``, ``true``): the same in every trial

>>> check_space({"learning_rate": {"loguniform": [1e-4, 1e-1]}, "epochs": 2})
{'lr': {'loguniform': [0.0001, 0.1]}, 'epochs': 2}
>>> check_space({"epochs": {"normal": [1, 3]}})  # doctest: +ELLIPSIS
Traceback (most recent call last):
...
kafkaml_ray.errors.InvalidInput: search space 'epochs': {'normal': [1, 3]} is not one sampler...

`run_tune` reads the datasource once, then runs one Tune trial per sampled configuration,
one CPU each, in the existing training loops. Every trial is stored as a `TrainingResult`
(``tune_id`` set, its hyper-parameters, learning curve, metrics and weights); when the search
ends the best finished trial by ``metric``/``mode`` is marked ``best``. `stop_tune` ends a
search early through Tune's own stopper: its running trials are stopped, their resources
freed, and the best of the trials that finished is still marked.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import re
import threading
from collections.abc import Mapping
from typing import Any

import numpy as np

from kafkaml_ray._private.rayutil import OneShot
from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.lineage import record
from kafkaml_ray.model_code import model_version
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import (
    Datasource,
    MLModel,
    ResultStatus,
    Store,
    TrainingResult,
    TuneRun,
    TuneStatus,
    move_result,
    move_search,
)
from kafkaml_ray.train.kwargs import ALIASES, TRAIN_ARGS, parse_kwargs
from kafkaml_ray.train.reporter import RunSpec

__all__ = [
    "check_space",
    "finish_search",
    "run_tune",
    "start_tune",
    "stop_tune",
    "driver_name",
    "best_of",
    "metric_value",
    "SAMPLERS",
]

logger = logging.getLogger(__name__)

SAMPLERS = ("choice", "grid", "uniform", "loguniform", "randint")
_TUNABLE = sorted({*TRAIN_ARGS, "batch_size"} - {"num_workers"})
_MODEL_PARAM = re.compile(r"model\.[A-Za-z_][A-Za-z0-9_]{0,199}")


# -- the search space ---------------------------------------------------------------------
def _check_value(key: str, name: str, value: Any) -> None:
    if name.startswith("model."):
        finite = not isinstance(value, float) or math.isfinite(value)
        if not (value is None or isinstance(value, str | int | float | bool)) or not finite:
            raise InvalidInput(
                f"search space {key!r}: {value!r} is not a number, a string, true, false or null"
            )
        return
    if name == "batch_size":
        if not isinstance(value, int) or isinstance(value, bool) or value < 1:
            raise InvalidInput(
                f"search space {key!r}: batch_size={value!r} is not a whole number >= 1"
            )
        return
    try:
        parse_kwargs({name: value}, "train")
    except InvalidInput as e:
        raise InvalidInput(f"search space {key!r}: {e}") from None


def _bounds(key: str, kind: str, args: Any) -> list[Any]:
    """The values a ranged sampler can give at its ends (checked like any value)."""
    if not (
        isinstance(args, list | tuple)
        and len(args) == 2
        and all(isinstance(a, int | float) and not isinstance(a, bool) for a in args)
        and math.isfinite(args[0])
        and math.isfinite(args[1])
        and args[0] < args[1]
    ):
        raise InvalidInput(f"search space {key!r}: {kind} takes [low, high] numbers, low < high")
    lo, hi = args
    if kind == "randint":
        if not all(isinstance(a, int) for a in args):
            raise InvalidInput(f"search space {key!r}: randint takes whole numbers")
        return [lo, hi - 1]
    if kind == "loguniform" and lo <= 0:
        raise InvalidInput(f"search space {key!r}: loguniform needs low > 0")
    return [float(lo), float(hi)]


def check_space(space: Any) -> dict[str, Any]:
    """The space with canonical keys (``lr`` for ``learning_rate``), checked without Ray;
    :class:`InvalidInput` names the key that is wrong."""
    if not isinstance(space, Mapping) or not space:
        raise InvalidInput(
            'a search space is a non-empty JSON object, e.g. {"lr": {"loguniform": [1e-4, 1e-1]}}'
        )
    out: dict[str, Any] = {}
    for key, spec in space.items():
        name = ALIASES.get(key, key) if isinstance(key, str) else key
        if not (name in _TUNABLE or _MODEL_PARAM.fullmatch(str(name))):
            raise InvalidInput(
                f"search space {key!r}: not a tunable argument; tunable: {', '.join(_TUNABLE)}, "
                "and model.<parameter> for scikit-learn and XGBoost models"
            )
        if name in out:
            raise InvalidInput(f"search space {key!r}: {name} is given twice")
        if isinstance(spec, Mapping):
            kind = next(iter(spec)) if len(spec) == 1 else None
            if kind not in SAMPLERS:
                raise InvalidInput(
                    f"search space {key!r}: {dict(spec)!r} is not one sampler of "
                    f'{", ".join(SAMPLERS)} (e.g. {{"choice": [16, 32]}})'
                )
            args = spec[kind]
            if kind in ("choice", "grid"):
                if not isinstance(args, list | tuple) or not args:
                    raise InvalidInput(
                        f"search space {key!r}: {kind} takes a non-empty list of values"
                    )
                values = list(args)
            else:
                values = _bounds(key, kind, args)
            for v in values:
                _check_value(key, name, v)
            out[name] = {kind: list(args)}
        elif isinstance(spec, list | tuple):
            raise InvalidInput(
                f'search space {key!r}: a list needs a sampler, e.g. {{"choice": {list(spec)!r}}}'
            )
        else:
            _check_value(key, name, spec)
            out[name] = spec
    return out


def _tune_space(space: Mapping[str, Any]) -> dict[str, Any]:
    """A checked space as Ray Tune's ``param_space``."""
    from ray import tune

    samplers = {
        "choice": tune.choice,
        "grid": tune.grid_search,
        "uniform": lambda a: tune.uniform(*a),
        "loguniform": lambda a: tune.loguniform(*a),
        "randint": lambda a: tune.randint(*a),
    }
    out = {}
    for name, spec in space.items():
        if isinstance(spec, Mapping):
            ((kind, args),) = spec.items()
            out[name] = samplers[kind](list(args))
        else:
            out[name] = spec
    return out


def metric_value(result: Any, metric: str) -> float | None:
    """A result's final ``metric`` (``val_x``: validation ``x``, else training), if finite."""
    val, train = result.val_metrics or {}, result.train_metrics or {}
    v = (
        val.get(metric[4:])
        if metric.startswith("val_") and metric[4:] in val
        else train.get(metric)
    )
    return float(v) if isinstance(v, int | float) and math.isfinite(v) else None


def best_of(results: list[TrainingResult], metric: str, mode: str) -> TrainingResult | None:
    """The finished result with the best final ``metric``; the first one on a tie."""
    sign = 1 if mode == "min" else -1
    scored = [
        (sign * v, r.id, r)
        for r in results
        if r.status == ResultStatus.FINISHED and (v := metric_value(r, metric)) is not None
    ]
    return min(scored, key=lambda t: t[:2])[2] if scored else None


# -- a trial ------------------------------------------------------------------------------
@dataclasses.dataclass
class _Split:
    """One split held in memory; iterates like a Ray Dataset for the training loops."""

    data: np.ndarray
    label: np.ndarray | None

    def iter_batches(self, **_: Any):
        yield {"data": self.data} | ({} if self.label is None else {"label": self.label})


def _plain(v: Any) -> Any:
    return v.item() if isinstance(v, np.generic) else v


def _trial(
    config: dict[str, Any],
    template: RunSpec,
    model_id: int,
    version_id: int,
    tune_id: int,
    shards: dict[str, _Split],
) -> None:
    """One Tune trial: its own result row, trained by the framework's loop."""
    from kafkaml_ray.train.fit import train
    from kafkaml_ray.train.reporter import Reporter, error_text

    params = {k: _plain(v) for k, v in config.items()}
    batch_size = params.get("batch_size", template.batch_size)
    train_args = {k: v for k, v in params.items() if k != "batch_size"}
    lineage = template.lineage and template.lineage.with_params(
        {"batch_size": batch_size, **train_args}
    )
    store = Store.for_url(template.settings.db_url)
    with store.session() as s:
        row = TrainingResult(
            model_id=model_id,
            model_version_id=version_id,
            tune_id=tune_id,
            status=ResultStatus.TRAINING,
            hyperparameters=params,
            progress={"phase": "starting"},
            lineage=lineage and lineage.as_json(),
        )
        s.add(row)
        s.flush()
        result_id = row.id
    spec = dataclasses.replace(
        template,
        result_id=result_id,
        batch_size=batch_size,
        train_args=train_args,
        lineage=lineage,
    )
    status, error = ResultStatus.FAILED, "the trial was interrupted"
    try:
        train(spec, shards, reporter=Reporter(spec, enabled=True, tune=True))
        status, error = ResultStatus.FINISHED, None
    except Exception as e:
        error = error_text(e)
        raise  # Tune records the trial as failed; the other trials go on
    finally:
        with store.session() as s:
            row = s.get(TrainingResult, result_id)
            if row is not None:  # (a step after training may have written its error)
                move_result(s, result_id, status, only_from=[ResultStatus.TRAINING],
                            error=error or row.error)  # fmt: skip
        store.dispose()


# -- the search ---------------------------------------------------------------------------
def _on_malformed(ds: Datasource) -> str:
    """A search skips the malformed messages that its datasource's training skipped."""
    return "skip" if ds.malformed_count else "fail"


def _read(settings: Settings, ds: Datasource) -> dict[str, _Split]:
    """The datasource read once from Kafka, split, in memory."""
    from kafkaml_ray.frameworks.data import to_numpy
    from kafkaml_ray.ingest.control import parse_ranges
    from kafkaml_ray.ingest.dataset import read_ranges, split_dataset

    data = read_ranges(
        settings.kafka_config(),
        parse_ranges(ds.topic),
        ds.input_format,
        ds.input_config,
        _on_malformed(ds),
    )
    splits = split_dataset(data, ds.validation_rate, ds.test_rate)
    return {
        name: _Split(*to_numpy(d)) for name, d in zip(("train", "val", "test"), splits, strict=True)
    }


def finish_search(store: Store, tune_id: int, errors: dict[str, str], failure: str | None) -> None:
    """Close unfinished trials, mark the best, and record the search's status."""
    with store.session() as s:
        run = s.get_one(TuneRun, tune_id)
        training = [ResultStatus.TRAINING]
        for r in run.results:
            if run.status == TuneStatus.STOPPED:
                move_result(s, r.id, ResultStatus.STOPPED, only_from=training,
                            error="stopped by the user")  # fmt: skip
            else:
                error = errors.get(repr(sorted(r.hyperparameters.items())))
                error = error or failure or "the trial ended without a result"
                move_result(s, r.id, ResultStatus.FAILED, only_from=training, error=error)
        s.expire_all()  # (read the moves back)
        best = best_of(run.results, run.metric, run.mode)
        for r in run.results:
            r.best = r is best
        # A stopped search stays stopped (by `stop_tune`), with its best finished trial marked.
        if failure:
            move_search(s, tune_id, TuneStatus.FAILED, failure)
        elif best is not None:
            move_search(s, tune_id, TuneStatus.FINISHED)
        elif not run.results or all(r.status == ResultStatus.FAILED for r in run.results):
            first = next((r.error for r in run.results if r.error), "no trial ran")
            move_search(s, tune_id, TuneStatus.FAILED, f"every trial failed; the first: {first}")
        else:
            seen = sorted(
                {*(f"val_{k}" for r in run.results for k in r.val_metrics or {})}
                | {k for r in run.results for k in r.train_metrics or {}}
            )
            reported = ", ".join(seen) or "none"
            error = f"no trial reported metric {run.metric!r}; reported: {reported}"
            move_search(s, tune_id, TuneStatus.FAILED, error)


def run_tune(
    settings: Settings,
    tune_id: int,
    max_concurrent_trials: int = 2,
    stop: threading.Event | None = None,
) -> None:
    """Run the search of TuneRun ``tune_id`` to its end, or until ``stop`` is set;
    everything is recorded in the store."""
    from ray import tune

    from kafkaml_ray.train.reporter import error_text

    store = Store.for_url(settings.db_url)
    with store.session() as s:
        run = s.get_one(TuneRun, tune_id)
        model = s.get_one(MLModel, run.model_id)
        ds = s.get_one(Datasource, run.datasource_id)
        template = RunSpec(
            result_id=0,  # each trial stores its own result
            model_name=model.name,
            framework=model.framework,
            code=model.code,
            imports=model.imports,
            batch_size=32,
            settings=settings,
            input_shape=model.input_shape,
        )
        version = model_version(s, model)  # (each trial trains this code)
        version_id = version.id
        template.lineage = record(
            ds, model=model, version=version, params={}, on_malformed=_on_malformed(ds), tune=run
        )
        space, num_samples = dict(run.space), run.num_samples
    errors: dict[str, str] = {}
    failure = None
    try:
        shards = _read(settings, ds)
        sizes = {k: len(v.data) for k, v in shards.items()}
        template.lineage = template.lineage.with_split(sizes=sizes)
        trainable = tune.with_resources(
            tune.with_parameters(
                _trial,
                template=template,
                model_id=model.id,
                version_id=version_id,
                tune_id=tune_id,
                shards=shards,
            ),
            {"cpu": 1},
        )
        tuner = tune.Tuner(
            trainable,
            param_space=_tune_space(space),
            tune_config=tune.TuneConfig(
                num_samples=num_samples,
                max_concurrent_trials=max_concurrent_trials,
                reuse_actors=False,
            ),
            run_config=tune.RunConfig(
                name=f"kafkaml-tune-{tune_id}",
                storage_path=str(settings.home / "ray_results"),
                failure_config=tune.FailureConfig(max_failures=0),
                stop=_Stopper(stop or threading.Event()),
                verbose=0,
            ),
        )
        for r in tuner.fit():
            if r.error is not None:
                params = {k: _plain(v) for k, v in (r.config or {}).items()}
                errors[repr(sorted(params.items()))] = error_text(r.error)
    except Exception as e:  # noqa: BLE001 - recorded on the search
        logger.exception("tune run %d failed", tune_id)
        failure = error_text(e)
    finish_search(store, tune_id, errors, failure)
    store.dispose()
    logger.info("tune run %d: done", tune_id)


def _Stopper(event: threading.Event):
    """A Tune stopper that ends the whole search once ``event`` is set (Tune asks it on every
    turn of its loop, about ten times a second)."""
    from ray import tune

    class Stopper(tune.Stopper):
        def __init__(self, event: threading.Event):
            self.event = event

        def __call__(self, trial_id: str, result: dict) -> bool:
            return False

        def stop_all(self) -> bool:
            return self.event.is_set()

        # Tune saves its run config (this too) with the experiment; an event does not pickle.
        def __getstate__(self) -> dict:
            return {}

        def __setstate__(self, state: dict) -> None:
            self.event = threading.Event()

    return Stopper(event)


class _TuneDriver(OneShot):
    """A search's driver, in a detached actor: it outlives the process that started it."""

    def __init__(self) -> None:
        super().__init__()
        self._stop = threading.Event()

    def run(self, settings: Settings, tune_id: int, max_concurrent_trials: int) -> None:
        import ray

        self.began()
        try:
            run_tune(settings, tune_id, max_concurrent_trials, self._stop)
        except Exception as e:  # noqa: BLE001 - recorded on the search
            logger.exception("tune run %d failed", tune_id)
            finish_search(Store.for_url(settings.db_url), tune_id, {}, f"{type(e).__name__}: {e}")
        ray.actor.exit_actor()

    def stop(self) -> None:
        self._stop.set()


def driver_name(settings: Settings, tune_id: int) -> str:
    from kafkaml_ray._private.rayutil import actor_name

    return actor_name("tune", settings, tune_id)


def start_tune(settings: Settings, tune_id: int, max_concurrent_trials: int = 2) -> None:
    """Start the search of TuneRun ``tune_id`` in a detached Ray actor and return."""
    from kafkaml_ray._private.rayutil import run_detached

    name = driver_name(settings, tune_id)
    run_detached(settings, _TuneDriver, name, settings, tune_id, max_concurrent_trials)


def stop_tune(settings: Settings, tune_id: int, timeout: float = 60.0) -> bool:
    """Ask a search's driver to stop its trials and wait for it to end (killed after
    ``timeout``); True if a driver was running. Mark the search stopped first."""
    from kafkaml_ray._private.rayutil import stop_detached

    return stop_detached(settings, driver_name(settings, tune_id), "stop", exit_wait=timeout)
