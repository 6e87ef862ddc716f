"""Every status change of a training result and of a Tune search, in one module.

A result moves only along these edges (to ← from):

- training ← waiting: its run claims it;
- finished ← training;
- failed ← waiting, training;
- stopped ← waiting, training (by the user, or its search stopped);
- waiting ← failed, stopped (an online result resumes from its checkpoint), and ← training
  (recovery: an online run whose process went).

A search moves from running to finished, failed or stopped, and never back.

Each move is one guarded UPDATE: the status is compared and set together, so a stop and a
run's last write cannot both win (a read, then a write, could turn a stopped run
finished). Writes that change no status, a run's progress and metrics, go through
`update_training` under the same guard.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

from sqlalchemy import update
from sqlalchemy.orm import Session

from kafkaml_ray.statuses import ResultStatus, TuneStatus
from kafkaml_ray.store.models import TrainingResult, TuneRun

__all__ = ["RESULT_MOVES", "move_result", "update_training", "move_search"]

_W, _T = ResultStatus.WAITING, ResultStatus.TRAINING

#: a result's status → the statuses it may be reached from
RESULT_MOVES: dict[ResultStatus, tuple[ResultStatus, ...]] = {
    ResultStatus.TRAINING: (_W,),
    ResultStatus.FINISHED: (_T,),
    ResultStatus.FAILED: (_W, _T),
    ResultStatus.STOPPED: (_W, _T),
    ResultStatus.WAITING: (ResultStatus.FAILED, ResultStatus.STOPPED, _T),
}


def _update_if(s: Session, result_id: int, expect: Iterable[ResultStatus], **fields: Any) -> bool:
    stmt = (
        update(TrainingResult)
        .where(TrainingResult.id == result_id, TrainingResult.status.in_(list(expect)))
        .values(**fields)
        .execution_options(synchronize_session=False)
    )
    return s.execute(stmt).rowcount == 1


def move_result(
    s: Session,
    result_id: int,
    to: ResultStatus,
    *,
    only_from: Iterable[ResultStatus] | None = None,
    **fields: Any,
) -> bool:
    """Give a result status ``to`` (and ``fields``: its error, progress...) if its status
    is one ``to`` may be reached from (`RESULT_MOVES`), or one of ``only_from`` where the
    caller allows fewer. True if it moved. The session's loaded rows are not refreshed.

    >>> move_result(None, 1, ResultStatus.FINISHED, only_from=[ResultStatus.WAITING])
    Traceback (most recent call last):
    ...
    ValueError: a result cannot move from waiting to finished
    """
    allowed = RESULT_MOVES[to]
    expect = allowed if only_from is None else tuple(only_from)
    if wrong := [x.value for x in expect if x not in allowed]:
        raise ValueError(f"a result cannot move from {', '.join(wrong)} to {to.value}")
    return _update_if(s, result_id, expect, status=to, **fields)


def update_training(s: Session, result_id: int, **fields: Any) -> bool:
    """Write ``fields`` (progress, metrics, weights) on a result while it trains; False
    once it no longer does (stopped, failed, deleted): the run stops writing."""
    if "status" in fields:
        raise ValueError("a status changes through move_result")
    return _update_if(s, result_id, [_T], **fields)


def move_search(s: Session, tune_id: int, to: TuneStatus, error: str | None = None) -> bool:
    """End a running search as ``to`` with ``error``; True if it moved (a search that had
    already ended keeps how it ended)."""
    if to == TuneStatus.RUNNING:
        raise ValueError("a search never runs again")
    stmt = (
        update(TuneRun)
        .where(TuneRun.id == tune_id, TuneRun.status == TuneStatus.RUNNING)
        .values(status=to, error=error)
        .execution_options(synchronize_session=False)
    )
    return s.execute(stmt).rowcount == 1
