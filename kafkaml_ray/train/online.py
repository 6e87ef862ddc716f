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
4. decides whether the window publishes a new version of the result: on the first window,
   and then whenever the model beats the newest published version by ``improvement`` in
   ``monitoring_metric``, both scored on the same unseen data: the window's validation
   share (the whole window, before training on it, when it has none). So after a concept
   drift, when the published version falls too, a model that recovers is published again;
5. every ``checkpoint_s`` (and when the data pauses) saves a checkpoint of the windows
   trained since the last one (the learner's state, the next offset of every partition, the
   weights each window publishes) in the artifact store, then records those windows
   (``OnlineWindow``) and versions (``ResultVersion``; the result's ``weights_uri`` points
   at the newest) in the store, in one transaction.

It ends as finished after ``stream_timeout_s`` without data, ``max_windows`` or
``max_duration_s``; as stopped when stopped (Ray cancels the task). A run whose process dies
is started again by Ray and resumes from its checkpoint: the next window starts at the
checkpoint's offsets, so no window is skipped and none is recorded twice; the windows trained
since that checkpoint (at most ``checkpoint_s`` of training) are trained again.
"""

from __future__ import annotations

import contextlib
import json
import logging
import time
from collections.abc import Callable
from datetime import UTC, datetime
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
#: A trained window: its row, and what it publishes (weights, their file name, metrics) or None.
Window = tuple[dict[str, Any], tuple[bytes, str, dict] | None]


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

    def put_version(self, window: int, name: str, weights: bytes) -> str:
        """Write the weights that ``window`` publishes; their URI."""
        path = f"results/{self.spec.result_id}/versions/window-{window}/{name}"
        return artifacts.replace(self.base, path, weights)

    def save_checkpoint(self, windows: list[Window], state: bytes) -> list[dict[str, Any]]:
        """Checkpoint ``windows`` (those trained since the last checkpoint, oldest first)
        with the learner's state after the last (weights and optimizer). The weights each
        window publishes, and the state, are written first, then the record that points at
        them: a crash before that leaves the previous checkpoint whole. The record holds
        the windows' rows and what they publish, for a crash before they reached the store.
        Returns those entries (what `record` takes)."""
        entries = []
        for row, publish in windows:
            if publish is not None:
                weights, name, metrics = publish
                uri = self.put_version(row["window"], name, weights)
                publish = {"metrics": metrics, "weights_uri": uri}
            entries.append({"row": row, "publish": publish})
        last = windows[-1][0]
        uri = artifacts.replace(self.base, f"{self.prefix}/window-{last['window']}-state", state)
        record = {
            "window": last["window"], "state_uri": uri, "positions": last["next"],
            "windows": entries,
        }  # fmt: skip
        kept = self.checkpoints()
        if kept:  # (the one to fall back on)
            data = json.dumps(kept[0]).encode()
            artifacts.replace(self.base, f"{self.prefix}/checkpoint.previous.json", data)
        data = json.dumps(record).encode()  # replaced whole: a kill never leaves it torn
        artifacts.replace(self.base, f"{self.prefix}/checkpoint.json", data)
        dropped = kept[1].get("state_uri") if len(kept) > 1 else None
        if dropped and dropped not in (uri, kept[0].get("state_uri")):
            artifacts.delete(dropped)  # (no longer one to fall back on)
        return entries

    def resume(self, learner: Learner) -> dict[str, Any] | None:
        """Continue ``learner`` from the last checkpoint (None: there is none), and store
        its windows and the versions they published if the crash came before they were."""
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
        entries = saved.get("windows")
        if entries is None:  # (written when a checkpoint held one window: its state's weights)
            entries = [{"row": saved["row"], "publish": None}]
            if saved.get("publish"):
                name = frameworks.get(self.spec.framework).weights_name
                uri = self.put_version(saved["row"]["window"], name, learner.weights())
                entries[0]["publish"] = {"metrics": saved["publish"], "weights_uri": uri}
        self.record(entries)
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

    def record(self, entries: list[dict[str, Any]], progress: bool = False) -> tuple[list, bool]:
        """Checkpointed windows (`save_checkpoint`'s entries), and a new version for each
        that publishes, in one transaction; those stored already are left as they are. With
        ``progress``, the result's progress and metrics too. Returns ``(window, version)``
        of the versions published, and whether the result still trains."""
        from sqlalchemy import func, select

        from kafkaml_ray.store import OnlineWindow, ResultVersion, TrainingResult, update_training

        published: list[tuple[int, int]] = []
        rid = self.spec.result_id
        with self.store.session() as s:
            stored = set(
                s.scalars(
                    select(OnlineWindow.window).where(
                        OnlineWindow.result_id == rid,
                        OnlineWindow.window.in_([e["row"]["window"] for e in entries]),
                    )
                )
            )
            newest = select(func.max(ResultVersion.version))
            last = s.scalar(newest.where(ResultVersion.result_id == rid))
            for entry in entries:
                row, publish, version = entry["row"], entry["publish"], None
                if row["window"] in stored:
                    continue
                if publish is not None:
                    version = last = (last or 0) + 1
                    uri = publish["weights_uri"]
                    s.add(
                        ResultVersion(
                            result_id=rid,
                            version=version,
                            window=row["window"],
                            metrics=publish["metrics"],
                            offsets=row["next"],
                            weights_uri=uri,
                        )
                    )
                    published.append((row["window"], version))
                s.add(
                    OnlineWindow(
                        result_id=rid,
                        window=row["window"],
                        messages=row["messages"],
                        malformed=row["malformed"],
                        prequential=row["prequential"],
                        train=row["train"],
                        val=row["val"],
                        offsets=row["offsets"],
                        version=version,
                        created_at=_utc(row.get("trained_at", time.time())),
                    )
                )
            result = s.get(TrainingResult, rid)
            if published and result is not None:  # (the newest version's weights)
                result.weights_uri = uri
            row = entries[-1]["row"]
            going = not progress or update_training(
                s,
                rid,
                progress={
                    "phase": "training",
                    "window": row["window"],
                    "version": published[-1][1] if published else None,
                },
                train_metrics=row["train"],
                val_metrics=row["val"] or row["prequential"],
            )
        return published, going


def _utc(epoch_s: float) -> datetime:
    """Seconds since the epoch as the store keeps time (naive UTC)."""
    return datetime.fromtimestamp(epoch_s, UTC).replace(tzinfo=None)


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
    # Windows are checkpointed and recorded together, at most every checkpoint_s, in this
    # thread: a writer thread beside the training would contend with it for the GIL. A
    # crash trains again the windows since the last checkpoint, from its offsets.
    unsaved: list[Window] = []
    saved_at = time.monotonic()

    def checkpoint() -> bool:
        """Checkpoint and record the windows trained since the last checkpoint; whether
        the result still trains."""
        nonlocal unsaved, saved_at
        if not unsaved:
            return True
        windows, unsaved = unsaved, []
        state = learner.snapshot()[1]
        entries = _retrying(
            run, "writing the checkpoint", lambda: run.save_checkpoint(windows, state)
        )
        published, going = _retrying(
            run, "recording the windows", lambda: run.record(entries, progress=True)
        )
        for at, version in published:
            logger.info("result %d: version %d, window %d", spec.result_id, version, at)
        stream.commit(windows[-1][0]["next"])  # (the group's offsets: for lag tools)
        saved_at = time.monotonic()
        return going

    def waiting() -> bool:  # asked while no data comes: says so, and whether still training
        if unsaved:
            return checkpoint()
        progress = {"phase": "waiting for data", "window": window}
        return _retrying(run, "recording progress", lambda: run.update(progress=progress))

    started, why = time.monotonic(), "the stream ended"
    between = True  # (the learner holds whole windows only: its state may be saved)
    try:
        if not waiting():
            return "stopped"  # (its status says so already)
        while True:
            due = unsaved and time.monotonic() - saved_at >= options.checkpoint_s
            if due and not checkpoint():
                why = "stopped"
                break
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
                ask_after=0.5 if unsaved else 5.0,  # (a pause: what was trained is saved)
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
            between = False
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
                weights = learner.weights()
                metrics = {**watched, "monitored": value, "previous": before}
                publish = (weights, adapter.weights_name, metrics)
                if published is None:
                    published = new_learner()
                published.load(weights)
                published_at = window
            row["trained_at"] = time.time()  # (recorded later: when it was trained)
            unsaved.append((row, publish))
            between = True
    finally:
        try:
            if between:  # the windows since the last checkpoint, also when the run fails
                checkpoint()
        finally:
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
