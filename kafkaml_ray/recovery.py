"""After a restart: what the store says runs, set against what runs.

``kafkaml-ray up`` calls `reconcile` once the stack is up again (after ``down``, a Ray head
that crashed, or a runner that died): a training result left "training" whose runner is
gone is resumed when it trains online (from its checkpoint and offsets: no window lost or
trained twice) and failed with the reason when it trained a fixed stream (its epochs are
gone; ``result reproduce`` trains it again); a search whose driver is gone fails; an
inference the store calls running but that has no Serve application is deployed again (it
resumes from its consumer group's committed offsets).
"""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING

from sqlalchemy import select

from kafkaml_ray.store import (
    Datasource,
    Inference,
    InferenceStatus,
    ResultStatus,
    TrainingDeployment,
    TrainingResult,
    TuneRun,
    TuneStatus,
    move_result,
    move_search,
)

if TYPE_CHECKING:
    from kafkaml_ray.client import Client

__all__ = ["reconcile", "GONE"]

logger = logging.getLogger(__name__)

#: why a batch result or a search that was cut off by a restart failed
GONE = "its training stopped with the Ray cluster (kafkaml-ray down, or a crash)"


def reconcile(client: Client) -> list[str]:
    """Resume, fail or redeploy what a restart cut off (see the module); what was done,
    a line each."""
    done = _trainings(client) + _searches(client) + _inferences(client)
    for line in done:
        logger.info("reconcile: %s", line)
    return done


def _job_running(client: Client, job_id: str) -> bool:
    from kafkaml_ray.train.submit import job_client

    try:
        status = str(job_client(client.settings).get_job_status(job_id))
    except Exception:  # noqa: BLE001 - a new head does not know the old one's jobs
        return False
    return status.rsplit(".", 1)[-1] in ("PENDING", "RUNNING")


def _trainings(client: Client) -> list[str]:
    from kafkaml_ray.train import pool
    from kafkaml_ray.train.launch import runner_name, start_runner

    unfinished = [ResultStatus.WAITING, ResultStatus.TRAINING]
    with client.store.session() as s:
        deps = s.scalars(
            select(TrainingDeployment)
            .where(TrainingDeployment.datasource_id.is_not(None))
            .where(TrainingDeployment.results.any(TrainingResult.status.in_(unfinished)))
        ).all()
        cut = []
        for dep in deps:
            ds = s.get(Datasource, dep.datasource_id)
            online = ds is not None and (ds.message or {}).get("incremental") is True
            cut.append((dep.id, dep.datasource_id, dep.job_id, online))
    done = []
    for dep_id, ds_id, job_id, online in cut:
        if pool.running(client.settings, runner_name(client.settings, dep_id)):
            continue  # its runner runs
        if job_id and _job_running(client, job_id):
            continue
        with client.store.session() as s:
            dep = s.get_one(TrainingDeployment, dep_id)
            resumed, failed = [], []
            for r in dep.results:
                if r.status == ResultStatus.TRAINING and online:
                    progress = {"phase": "resuming from its checkpoint"}
                    move_result(s, r.id, ResultStatus.WAITING,
                                only_from=[ResultStatus.TRAINING], progress=progress)  # fmt: skip
                    resumed.append(r.id)
                elif r.status == ResultStatus.TRAINING:
                    error = f"{GONE}: `kafkaml-ray result reproduce {r.id}` trains it again"
                    move_result(s, r.id, ResultStatus.FAILED,
                                only_from=[ResultStatus.TRAINING], error=error)  # fmt: skip
                    failed.append(r.id)
            # (the UPDATEs above leave the loaded rows as they were read)
            waiting = bool(resumed) or any(r.status == ResultStatus.WAITING for r in dep.results)
        if waiting:
            start_runner(client.settings, dep_id, ds_id)
        done += [f"result {i}: resumed from its checkpoint (online)" for i in resumed]
        done += [f"result {i}: failed ({GONE})" for i in failed]
        if waiting and not resumed:
            done.append(f"deployment {dep_id}: its training started again on datasource {ds_id}")
    return done


def _searches(client: Client) -> list[str]:
    from kafkaml_ray._private.rayutil import find_actor
    from kafkaml_ray.train.tune import driver_name

    done = []
    with client.store.session() as s:
        for run in s.scalars(select(TuneRun).where(TuneRun.status == TuneStatus.RUNNING)).all():
            if find_actor(client.settings, driver_name(client.settings, run.id)) is not None:
                continue
            move_search(s, run.id, TuneStatus.FAILED, GONE)
            for r in run.results:
                move_result(s, r.id, ResultStatus.FAILED, error=GONE)
            done.append(f"tune run {run.id}: failed ({GONE})")
    return done


def _inferences(client: Client) -> list[str]:
    from kafkaml_ray.serve.deploy import app_status

    with client.store.session() as s:
        running = s.scalars(
            select(Inference.id).where(Inference.status == InferenceStatus.RUNNING)
        ).all()
    done = []
    for inference_id in running:
        if app_status(client.settings, inference_id)[0] != "NOT_STARTED":
            continue
        try:
            client.restart_inference(inference_id)
            done.append(f"inference {inference_id}: deployed again")
        except Exception as e:  # noqa: BLE001 - recorded on it; the others go on
            done.append(f"inference {inference_id}: could not be deployed again: {e}")
    return done
