"""What a training run records: the `RunSpec` that travels to Ray workers, and the
`Reporter` that writes a result's progress, learning curve, weights, test metrics and
confusion matrix (with its picture) to the store, in that order: the trained model is saved
before anything after training can fail."""

from __future__ import annotations

import io
import logging
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from kafkaml_ray import artifacts, frameworks
from kafkaml_ray.errors import KafkaMLError, RunStopped
from kafkaml_ray.frameworks.base import Fitted
from kafkaml_ray.frameworks.data import floats
from kafkaml_ray.lineage_record import Lineage
from kafkaml_ray.settings import Settings

__all__ = [
    "RunSpec",
    "Reporter",
    "after_training",
    "confusion_png",
    "error_text",
]

logger = logging.getLogger(__name__)


@dataclass
class RunSpec:
    """Everything one model's training needs; travels to Ray workers."""

    result_id: int
    model_name: str
    framework: str
    code: str
    imports: str
    batch_size: int
    settings: Settings
    train_args: dict[str, Any] = field(default_factory=dict)
    val_args: dict[str, Any] = field(default_factory=dict)
    confusion_matrix: bool = True
    gpu_fraction: float = 0.0
    input_shape: list[int] | None = None
    #: when each phase of the run began so far (`kafkaml_ray.schemas.PHASES`)
    marks: dict[str, float] = field(default_factory=dict)
    #: the result's lineage as recorded when the run started (`kafkaml_ray.lineage`)
    lineage: Lineage | None = None

    @property
    def epochs(self) -> int:
        """The passes a batch training makes (1 for a framework that fits once: the
        progress a run reports counts what it does)."""
        if not frameworks.get(self.framework).batch_epochs:
            return 1
        return int(self.train_args.get("epochs", 1))


class Reporter:
    """Writes progress, the learning curve and final results of one result to the store;
    in a Tune trial it also reports each epoch to Tune.

    Every write is made only while the result is training. When it is not (stopped by the
    user, failed, deleted), the write raises `RunStopped` and the run ends: a stop reaches
    the run at its next progress report (about every second) however it was started, even
    when Ray's cancel does not, and nothing is written after it.
    """

    def __init__(self, spec: RunSpec, enabled: bool = True, tune: bool = False):
        from kafkaml_ray.store import Store

        self.spec, self.enabled, self.tune = spec, enabled, tune
        self.store = Store.for_url(spec.settings.db_url) if enabled else None
        self._last = 0.0
        self.history: list[dict[str, Any]] = []
        self.marks = dict(spec.marks)
        # The run has its resources and has started (the runner stops reporting a wait).
        self._update(progress={"phase": "loading the data", "epoch": 0, "epochs": spec.epochs})

    def mark(self, phase: str) -> None:
        """The run's ``phase`` (a key of `kafkaml_ray.schemas.PHASES`) begins now."""
        self.marks[phase] = time.time()

    def _update(self, **fields: Any) -> None:
        from kafkaml_ray.store import update_training

        if not self.enabled:
            return
        with self.store.session() as s:
            if not update_training(s, self.spec.result_id, **fields):
                raise RunStopped(f"result {self.spec.result_id} is no longer training")

    def _check(self) -> None:
        """Raise `RunStopped` if the result is no longer training."""
        from kafkaml_ray.store import ResultStatus, TrainingResult

        if not self.enabled:
            return
        with self.store.session() as s:
            row = s.get(TrainingResult, self.spec.result_id)
            if row is None or row.status != ResultStatus.TRAINING:
                raise RunStopped(f"result {self.spec.result_id} is no longer training")

    def batch(self, epoch: int, batch: int, batches: int | None, loss: float | None) -> None:
        now = time.monotonic()
        if now - self._last < 1.0:
            return
        self._last = now
        last = self.history[-1] if self.history else {}
        self._update(
            progress={
                "epoch": epoch,
                "epochs": self.spec.epochs,
                "batch": batch,
                "batches": batches,
                "loss": loss,
                "metrics": last.get("val") or last.get("train") or {},
            }
        )

    def epoch(self, epoch: int, train: dict[str, float], val: dict[str, float]) -> None:
        self.history.append({"epoch": epoch, "train": floats(train), "val": floats(val)})
        self._update(
            history=list(self.history),
            progress={
                "epoch": epoch,
                "epochs": self.spec.epochs,
                "batch": None,
                "batches": None,
                "metrics": floats(val or train),
            },
        )
        if self.tune:
            import ray.tune

            ray.tune.report(
                {
                    "epoch": epoch,
                    **floats(train),
                    **{f"val_{k}": v for k, v in floats(val).items()},
                }
            )

    def trained(
        self, *, train: dict, val: dict, weights: bytes, weights_name: str, seconds: float
    ) -> None:
        """Store the weights first: nothing after training may lose the trained model."""
        from kafkaml_ray.lineage import saved

        if not self.enabled:
            return
        base, prefix = self.spec.settings.artifacts_uri, f"results/{self.spec.result_id}"
        self._check()  # (a stopped run's weights are not written)
        uri = artifacts.put(base, f"{prefix}/{weights_name}", weights)
        self.mark("saved")
        lineage = self.spec.lineage and saved(self.spec.lineage, uri, weights, self.spec.framework)
        try:
            self._update(
                phases=dict(self.marks),
                train_metrics=floats(train),
                val_metrics=floats(val),
                training_time_s=seconds,
                weights_uri=uri,
                **({"lineage": lineage.as_json()} if lineage else {}),
            )
        except RunStopped:  # stopped while the weights were written: they go too
            artifacts.delete(uri)
            raise

    def evaluated(self, test: dict, matrix: list | None, failed: list[str]) -> None:
        """The test metrics and confusion matrix (with its picture), and the steps that
        failed after training, named on the result."""
        if not self.enabled:
            return
        fields: dict[str, Any] = {"test_metrics": floats(test), "confusion_matrix": matrix}
        if matrix is not None:
            try:
                png = confusion_png(matrix, self.spec.model_name)
                fields["confusion_matrix_uri"] = artifacts.put(
                    self.spec.settings.artifacts_uri,
                    f"results/{self.spec.result_id}/confusion_matrix.png",
                    png,
                )
            except Exception as e:  # noqa: BLE001 - the weights are kept; say what failed
                logger.exception("result %d: the confusion matrix picture", self.spec.result_id)
                failed = [*failed, f"the confusion matrix picture: {_why(e)}"]
        if failed:
            fields["error"] = "trained and saved, then " + "; ".join(failed)
        self.mark("evaluated")
        self._update(phases=dict(self.marks), **fields)


def error_text(e: BaseException) -> str:
    """The user-facing reason a Ray Train run failed (the worker's own exception)."""
    failures = getattr(e, "worker_failures", None)
    if failures:
        e = failures[min(failures)]
    cause = getattr(e, "cause", None)  # RayTaskError wraps the original
    if isinstance(cause, BaseException):
        e = cause
    if isinstance(e, KafkaMLError):
        return str(e)
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"


def _why(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[-1] if text else ''}"


def after_training(
    reporter: Reporter, spec: RunSpec, fitted: Fitted, weights_name: str
) -> dict[str, Any]:
    """What follows every framework's training, on rank 0: save the weights, then evaluate
    the test set and build the confusion matrix. A step that fails is recorded on the
    result and the steps before it are kept; the trained model is never lost."""
    seconds = fitted.seconds
    reporter.mark("trained")
    history = reporter.history
    train_final = history[-1]["train"] if history else {}
    val_final = history[-1]["val"] if history else {}
    reporter.trained(
        train=train_final,
        val=val_final,
        weights=fitted.weights(),
        weights_name=weights_name,
        seconds=seconds,
    )
    failed: list[str] = []
    test_m: dict = {}
    conf = None
    try:
        test_m = dict(fitted.test())
    except Exception as e:  # noqa: BLE001 - recorded on the result
        logger.exception("result %d: the test metrics", spec.result_id)
        failed.append(f"the test metrics failed: {_why(e)}")
    reporter.mark("tested")
    if spec.confusion_matrix:
        try:
            conf = fitted.matrix()
        except Exception as e:  # noqa: BLE001 - recorded on the result
            logger.exception("result %d: the confusion matrix", spec.result_id)
            failed.append(f"the confusion matrix failed: {_why(e)}")
    reporter.evaluated(test_m, conf, failed)
    return {"train": train_final, "val": val_final, "test": test_m, "seconds": seconds}


def confusion_png(matrix: list[list[int]], title: str) -> bytes:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    m = np.asarray(matrix)
    fig, ax = plt.subplots(figsize=(1.0 + 0.5 * len(m), 0.8 + 0.5 * len(m)), dpi=100)
    ax.imshow(m, cmap="Blues")
    for (i, j), v in np.ndenumerate(m):
        ax.text(
            j,
            i,
            str(v),
            ha="center",
            va="center",
            color="white" if v > m.max() / 2 else "black",
            fontsize=8,
        )
    ax.set_xlabel("predicted")
    ax.set_ylabel("true")
    ax.set_title(f"{title}: test set")
    ax.set_xticks(range(len(m)))
    ax.set_yticks(range(len(m)))
    fig.tight_layout()
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    plt.close(fig)
    return buf.getvalue()
