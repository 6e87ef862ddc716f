"""The statuses of what the store keeps: a result, a datasource, an inference, a search."""

from __future__ import annotations

import enum

__all__ = ["ResultStatus", "DatasourceStatus", "InferenceStatus", "TuneStatus"]


class ResultStatus(enum.StrEnum):
    WAITING = "waiting"  # deployed, waiting for its data stream
    TRAINING = "training"
    FINISHED = "finished"
    FAILED = "failed"
    STOPPED = "stopped"

    @property
    def done(self) -> bool:
        return self in (ResultStatus.FINISHED, ResultStatus.FAILED, ResultStatus.STOPPED)


class DatasourceStatus(enum.StrEnum):
    RECEIVED = "received"  # stored, not yet handed to its deployment
    ACCEPTED = "accepted"  # handed to its deployment
    UNKNOWN_DEPLOYMENT = "unknown_deployment"  # well formed, but names no deployment
    REFUSED = "refused"  # broken control message; `error` says why
    FAILED = "failed"  # reading its ranges failed; `error` says why


class InferenceStatus(enum.StrEnum):
    DEPLOYING = "deploying"
    RUNNING = "running"
    STOPPED = "stopped"
    FAILED = "failed"


class TuneStatus(enum.StrEnum):
    RUNNING = "running"
    FINISHED = "finished"  # at least one trial finished; the best is marked
    FAILED = "failed"  # every trial failed, or the search itself; `error` says why
    STOPPED = "stopped"  # by the user

    @property
    def done(self) -> bool:
        return self != TuneStatus.RUNNING
