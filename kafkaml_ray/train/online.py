"""Online training: a model that keeps learning from an unbounded stream.

A control message with ``"incremental": true`` (Kafka-ML's ``OnlineRawSink`` sends one on its
first ``send()``) names topics rather than ranges. Each model of the deployment then runs
`online_run` in a Ray task of its own (1 CPU and its GPU fraction), which:

1. assigns itself every partition of those topics, starting at the first message at or after
   the control message's time (or at the ``topic:partition:start`` given), so nothing sent
   before the run was up is lost;
2. reads a *window*: up to ``window_messages`` messages, or what came in ``window_seconds``;
3. scores the model on the window before training on it (prequential, "test then train"),
   then trains on it (its last ``validation_rate`` share held out for validation),
   continuing from the current weights: PyTorch through Ignite, Keras through ``fit``;
4. saves a checkpoint (the weights and the next offset of every partition) in the artifact
   store, then records the window in the store (``OnlineWindow``);
5. publishes a new version of the result (``ResultVersion``; the result's ``weights_uri``
   points at the newest) on the first window, and then whenever the model beats the newest
   published version by ``improvement`` in ``monitoring_metric``, both scored on the same
   unseen data: the window's validation share (the whole window, before training on it,
   when it has none). So after a concept drift, when the published version falls too, a
   model that recovers is published again.

It ends as finished after ``stream_timeout_s`` without data, ``max_windows`` or
``max_duration_s``; as stopped when stopped (Ray cancels the task). A run whose process dies
is started again by Ray and resumes from its checkpoint: the next window starts at the
checkpoint's offsets, so no window is skipped and none is trained twice.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor
from typing import Any

import numpy as np

from kafkaml_ray import artifacts, frameworks
from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.frameworks import Learner
from kafkaml_ray.frameworks.data import fit_shape, floats
from kafkaml_ray.ingest.dataset import ReadError
from kafkaml_ray.ingest.formats import get_format
from kafkaml_ray.options import OnlineOptions
from kafkaml_ray.train.online_stream import OnlineStream, Source
from kafkaml_ray.train.reporter import RunSpec, error_text

__all__ = ["online_run", "online_task", "Source", "OnlineRecords"]

logger = logging.getLogger(__name__)

# -- transient errors ---------------------------------------------------------------------
#: How long a run retries a store or artifact write that fails (a database restart, SQLite
#: busy, an object store's hiccup) before it fails for good (seconds).
RETRY_FOR_S = 600.0


def _transient(e: BaseException) -> bool:
    """A store or artifact error that may pass: the connection, a lock, an I/O error (not
    a missing file, nor a refused value)."""
    from sqlalchemy.exc import InterfaceError, OperationalError

    if isinstance(e, FileNotFoundError):
        return False
    return isinstance(e, OperationalError | InterfaceError | OSError)


def _retrying(
    run: OnlineRecords, what: str, fn: Callable[[], Any], retry_for_s: float = RETRY_FOR_S
):
    """``fn()``, again with backoff (1 s doubling to 30 s) while it fails with a transient
    error, for up to ``retry_for_s``; the run's progress says what it retries."""
    deadline, delay = time.monotonic() + retry_for_s, 1.0
    while True:
        try:
            return fn()
        except Exception as e:
            if not _transient(e) or time.monotonic() + delay > deadline:
                raise
            why = str(e).strip().splitlines()[0][:200] if str(e).strip() else type(e).__name__
            logger.warning(
                "result %d: %s failed (%s); again in %.0fs", run.spec.result_id, what, why, delay
            )
            with contextlib.suppress(Exception):  # (the store may be what fails)
                run.update(progress={"phase": "retrying", "retrying": f"{what}: {why}"})
            time.sleep(delay)
            delay = min(delay * 2, 30.0)


# -- the run ------------------------------------------------------------------------------
class OnlineRecords:
    """One online run's state in the store and the artifact store."""

    def __init__(self, spec: RunSpec):
        from kafkaml_ray.store import Store

        self.spec = spec
        self.store = Store.for_url(spec.settings.db_url)
        self.prefix = f"results/{spec.result_id}/online"
        self.base = spec.settings.artifacts_uri

    def checkpoints(self) -> list[dict[str, Any]]:
        """The last checkpoint's record and the one before it, newest first: those that
        can be read (one left empty or torn by a crash is skipped)."""
        found = []
        for name in ("checkpoint.json", "checkpoint.previous.json"):
            uri = artifacts.join(self.base, f"{self.prefix}/{name}")
            try:
                found.append(json.loads(artifacts.get(uri)))
            except FileNotFoundError:
                continue
            except (OSError, ValueError) as e:
                logger.warning("result %d: %s cannot be read: %s", self.spec.result_id, name, e)
        return found

    def save_checkpoint(
        self, row: dict[str, Any], state: bytes, publish: dict[str, Any] | None
    ) -> None:
        """The learner's state (weights and optimizer) first, then the record that points
        at it: a crash between the two leaves the previous checkpoint whole. The record
        holds the window's row and the metrics of the version it publishes (None: none),
        for a crash before they reached the store."""
        window = row["window"]
        uri = artifacts.replace(self.base, f"{self.prefix}/window-{window}-state", state)
        record = {
            "window": window, "state_uri": uri, "positions": row["next"], "row": row,
            "publish": publish,
        }  # fmt: skip
        last = self.checkpoints()
        if last:  # (the one to fall back on)
            data = json.dumps(last[0]).encode()
            artifacts.replace(self.base, f"{self.prefix}/checkpoint.previous.json", data)
        data = json.dumps(record).encode()  # replaced whole: a kill never leaves it torn
        artifacts.replace(self.base, f"{self.prefix}/checkpoint.json", data)
        if window > 2:  # (the previous checkpoint's state is kept)
            old = f"{self.prefix}/window-{window - 2}-state"
            artifacts.delete(artifacts.join(self.base, old))

    def resume(self, learner: Learner) -> dict[str, Any] | None:
        """Continue ``learner`` from the last checkpoint (None: there is none), and store
        that window and the version it published if the crash came before they were."""
        for saved in self.checkpoints():
            try:
                if "state_uri" in saved:
                    learner.restore(artifacts.get(saved["state_uri"]))
                else:  # (the weights alone: written before the optimizer was kept)
                    learner.load(artifacts.get(saved["weights_uri"]))
                break
            except FileNotFoundError:
                raise
            except Exception as e:  # noqa: BLE001 - torn or empty: the one before it
                if _transient(e) and not isinstance(e, ValueError):
                    raise
                logger.warning(
                    "result %d: the checkpoint of window %s cannot be loaded (%s): the one "
                    "before it", self.spec.result_id, saved.get("window"), error_text(e),
                )  # fmt: skip
        else:
            return None
        metrics = saved.get("publish")
        name = frameworks.get(self.spec.framework).weights_name
        publish = (learner.weights(), name, metrics) if metrics else None
        self.record(saved["row"], publish)
        return saved

    def training(self) -> bool:
        """Whether the result still trains (not stopped or deleted meanwhile)."""
        from kafkaml_ray.store import ResultStatus, TrainingResult

        with self.store.session() as s:
            r = s.get(TrainingResult, self.spec.result_id)
            return r is not None and r.status == ResultStatus.TRAINING

    def update(self, **fields: Any) -> bool:
        from kafkaml_ray.store import update_training

        with self.store.session() as s:
            return update_training(s, self.spec.result_id, **fields)

    def record(
        self, row: dict[str, Any], publish: tuple[bytes, str, dict] | None, progress: bool = False
    ) -> tuple[int | None, bool]:
        """The window, and a new version when ``publish`` holds (weights, name, metrics);
        nothing if the window is stored already. With ``progress``, the result's progress
        and metrics too, in the same transaction. Returns the version published, and
        whether the result still trains."""
        from sqlalchemy import func, select

        from kafkaml_ray.store import OnlineWindow, ResultVersion, TrainingResult, update_training

        version = None
        with self.store.session() as s:
            stored = s.scalar(
                select(OnlineWindow.id).where(
                    OnlineWindow.result_id == self.spec.result_id,
                    OnlineWindow.window == row["window"],
                )
            )
            if stored is not None:
                return None, True
            if publish is not None:
                weights, name, metrics = publish
                last = s.scalar(
                    select(func.max(ResultVersion.version)).where(
                        ResultVersion.result_id == self.spec.result_id
                    )
                )
                version = (last or 0) + 1
                uri = artifacts.put(
                    self.base, f"results/{self.spec.result_id}/versions/{version}/{name}", weights
                )
                s.add(
                    ResultVersion(
                        result_id=self.spec.result_id,
                        version=version,
                        window=row["window"],
                        metrics=metrics,
                        offsets=row["next"],
                        weights_uri=uri,
                    )
                )
                result = s.get(TrainingResult, self.spec.result_id)
                if result is not None:
                    result.weights_uri = uri
            s.add(
                OnlineWindow(
                    result_id=self.spec.result_id,
                    window=row["window"],
                    messages=row["messages"],
                    malformed=row["malformed"],
                    prequential=row["prequential"],
                    train=row["train"],
                    val=row["val"],
                    offsets=row["offsets"],
                    version=version,
                )
            )
            going = not progress or update_training(
                s,
                self.spec.result_id,
                progress={"phase": "training", "window": row["window"], "version": version},
                train_metrics=row["train"],
                val_metrics=row["val"] or row["prequential"],
            )
        return version, going


def _better(value: float | None, published: float | None, options: OnlineOptions) -> bool:
    """Whether ``value`` beats the ``published`` version's value (on the same data) by
    ``options.improvement`` (and at all: a tie publishes nothing) in the wanted direction;
    anything finite beats no version."""
    if value is None or not np.isfinite(value):
        return False
    if published is None or not np.isfinite(published):
        return True
    gain = (value - published) if options.change == "up" else (published - value)
    return gain > 0 and gain >= options.improvement


def online_run(
    spec: RunSpec,
    source: Source,
    options: OnlineOptions,
    fmt: str,
    config: dict[str, Any],
    on_malformed: str,
) -> str:
    """Train ``spec``'s model online until the stream ends it; returns why it ended."""
    from kafkaml_ray.store import ResultVersion, select

    run = OnlineRecords(spec)

    adapter = frameworks.get(spec.framework)

    def new_learner() -> Learner:
        return adapter.learner(spec)

    learner = new_learner()
    decoder = get_format(fmt, config)
    epochs = int(spec.train_args.get("epochs", 1))  # (per window, in every framework)
    val_rate = options.validation_rate
    if val_rate is None:
        val_rate = source.get("validation_rate", 0.0)
    saved = _retrying(run, "reading the checkpoint", lambda: run.resume(learner))
    window = 0
    if saved is not None:
        window = saved["window"]
        logger.info("result %d: resuming after window %d", spec.result_id, window)
    # The newest published version, judged with the model on each window's held-out data:
    # after a drift both fall, and the model that recovers first is published.
    published, published_at = None, -1  # (the window after which it was published)
    with run.store.session() as s:
        newest = s.scalars(
            select(ResultVersion.weights_uri)
            .where(ResultVersion.result_id == spec.result_id)
            .order_by(ResultVersion.version.desc())
        ).first()
    if newest is not None:
        published = new_learner()
        published.load(_retrying(run, "reading the newest version", lambda: artifacts.get(newest)))
    stream = OnlineStream(spec, source, saved["positions"] if saved else None)
    # Each window's checkpoint and store writes run in a writer thread while the next window
    # is read and trained; one window's at a time, in order: a crash loses at most the
    # windows not yet checkpointed, which are read and trained again from the checkpoint.
    writer = ThreadPoolExecutor(1, thread_name_prefix=f"online-{spec.result_id}-writer")
    pending: tuple[Future[bool], dict[str, int]] | None = None

    def flush() -> bool:
        """Wait for the window in the writer; whether the result still trains."""
        nonlocal pending
        if pending is None:
            return True
        (done, positions), pending = pending, None
        going = done.result()
        stream.commit(positions)  # (the group's offsets: for lag tools)
        return going

    def write(row: dict[str, Any], state: bytes, publish: tuple | None) -> bool:
        metrics = publish[2] if publish else None
        _retrying(run, "writing the checkpoint", lambda: run.save_checkpoint(row, state, metrics))
        version, going = _retrying(
            run, "recording the window", lambda: run.record(row, publish, progress=True)
        )
        if version is not None:
            logger.info("result %d: version %d, window %d", spec.result_id, version, row["window"])
        return going

    def waiting() -> bool:  # asked while no data comes: says so, and whether still training
        progress = {"phase": "waiting for data", "window": window}
        return _retrying(run, "recording progress", lambda: run.update(progress=progress))

    started, why = time.monotonic(), "the stream ended"
    try:
        if not waiting():
            return "stopped"  # (its status says so already)
        while True:
            if options.max_windows is not None and window >= options.max_windows:
                why = f"{options.max_windows} windows trained"
                break
            if (
                options.max_duration_s is not None
                and time.monotonic() - started > options.max_duration_s
            ):
                why = f"ran for {options.max_duration_s:g}s"
                break
            msgs = stream.window(
                options.window_messages,
                options.window_seconds,
                options.stream_timeout_s,
                waiting,
            )
            if not msgs and not _retrying(run, "reading the status", run.training):
                why = "stopped"
                break
            if not msgs:
                why = f"no data for {options.stream_timeout_s:g}s"
                break
            batch = decoder.decode_batch(
                [m.value() for m in msgs], [m.key() for m in msgs], on_error="skip"
            )
            if batch.errors and on_malformed == "fail":
                first = batch.errors[0]
                m = msgs[first.index]
                raise ReadError(
                    f"malformed message at {m.topic()}:{m.partition()} offset {m.offset()}: "
                    f"{first} (on_malformed='skip' leaves such messages out)"
                )
            x, y = batch.data, batch.labels
            if y is None:
                raise InvalidInput("the stream has no labels (keys): online training needs them")
            x = fit_shape(x, learner.shape, spec.model_name)
            window += 1
            covered = stream.advance(msgs)
            row: dict[str, Any] = {
                "window": window,
                "messages": len(msgs),
                "malformed": len(batch.errors),
                "offsets": covered,
                "next": dict(stream.positions),
                "prequential": {},
                "train": {},
                "val": {},
            }
            if len(x):
                row["prequential"] = floats(learner.score(x, y))
                n_val = int(len(x) * val_rate)
                cut = len(x) - n_val
                row["train"] = floats(learner.fit(x[:cut], y[:cut], epochs)) if cut else {}
                row["val"] = floats(learner.score(x[cut:], y[cut:])) if n_val else {}
                if published is not None and not n_val and published_at == window - 1:
                    row["published"] = row["prequential"]  # the same weights, the same data
                elif published is not None:  # on what the model is judged on (unseen data)
                    held = (x[cut:], y[cut:]) if n_val else (x, y)
                    row["published"] = floats(published.score(*held))
            weights, state = learner.snapshot()  # (copies: the next window trains on)
            watched = row["val"] or row["prequential"]
            if watched and options.monitoring_metric not in watched:
                raise InvalidInput(
                    f"monitoring_metric {options.monitoring_metric!r} is not a metric of "
                    f"model {spec.model_name!r}: its windows report {', '.join(sorted(watched))}"
                    "; no version would ever be published. Deploy it again with one of them"
                )
            value = watched.get(options.monitoring_metric)
            before = row.get("published", {}).get(options.monitoring_metric)
            publish = None
            if len(x) and _better(value, before, options):
                metrics = {**watched, "monitored": value, "previous": before}
                publish = (weights, adapter.weights_name, metrics)
                if published is None:
                    published = new_learner()
                published.load(weights)
                published_at = window
            going = flush()  # (written while this window trained)
            pending = writer.submit(write, row, state, publish), row["next"]
            if not going:
                why = "stopped"
                break
    finally:
        try:
            flush()  # the last window's checkpoint, also when the run fails
        finally:
            writer.shutdown(wait=True)
            stream.close()
    return why


def online_task(
    spec: RunSpec,
    source: Source,
    options: OnlineOptions,
    fmt: str,
    config: dict[str, Any],
    on_malformed: str,
) -> None:
    """`online_run` as a Ray task: records how the run ended on its result."""
    from kafkaml_ray._private.rayutil import cancellable
    from kafkaml_ray.store import ResultStatus, Store, move_result

    store = Store.for_url(spec.settings.db_url)
    try:
        with cancellable():  # (a stop's ray.cancel interrupts the run)
            why = online_run(spec, source, options, fmt, config, on_malformed)
    except Exception as e:  # noqa: BLE001 - recorded on the result
        logger.exception("online result %d failed", spec.result_id)
        fields = {"status": ResultStatus.FAILED, "error": error_text(e)}
    else:
        fields = {"status": ResultStatus.FINISHED, "error": None, "progress": {"ended": why}}
    with store.session() as s:  # (stopped meanwhile: nothing is written)
        move_result(s, spec.result_id, fields.pop("status"), only_from=[ResultStatus.TRAINING],
                    **fields)  # fmt: skip
