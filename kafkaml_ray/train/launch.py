"""Starting training runs: the control listener's handler, and stopping them.

Without ``--submit`` a deployment's run starts when its data stream is announced: the
listener calls `on_datasource`, which has the training pool (`kafkaml_ray.train.pool`) run
the deployment's runner task (``training-<store tag>-<id>``), which runs
`~kafkaml_ray.train.runner.run_deployment`. The pool owns it, so it outlives the listener,
and it lands on a warm process, as do the tasks it submits. With ``--submit`` a Ray job was
submitted at deploy time; it waits for the datasource, so `on_datasource` only records it.
"""

from __future__ import annotations

import contextlib
import logging

from kafkaml_ray.errors import Conflict, NotFound
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import Datasource, ResultStatus, Store, TrainingDeployment
from kafkaml_ray.train import pool
from kafkaml_ray.train.pool import runner_name

__all__ = ["on_datasource", "start_runner", "stop_runner", "runner_name"]

logger = logging.getLogger(__name__)


def _run(settings: Settings, deployment_id: int, datasource_id: int) -> None:
    """A deployment's runner task (`start_runner`): its training, its failure recorded on
    its results. A stop cancels it (`stop_runner`); it then stops the runs it started."""
    from kafkaml_ray._private.rayutil import cancellable
    from kafkaml_ray.train.runner import cancel_runs, fail_results, run_deployment

    try:
        with cancellable():  # (a stop's ray.cancel interrupts it)
            run_deployment(settings, deployment_id, datasource_id)
    except KeyboardInterrupt:
        logger.info("deployment %d: stopped", deployment_id)
        cancel_runs()
    except Exception as e:  # noqa: BLE001 - recorded on the results
        logger.exception("deployment %d failed", deployment_id)
        fail_results(Store.for_url(settings.db_url), deployment_id, f"{type(e).__name__}: {e}")


def on_datasource(settings: Settings, datasource_id: int) -> None:
    """Hand a stored datasource to the deployment it names (the listener's handler)."""
    store = Store.for_url(settings.db_url)
    with store.session() as s:
        ds = s.get_one(Datasource, datasource_id)
        dep = s.get(TrainingDeployment, ds.deployment_id)
        if dep is None:
            raise NotFound(f"no training deployment with id {ds.deployment_id}")
        waiting = any(r.status == ResultStatus.WAITING for r in dep.results)
        if dep.datasource_id == ds.id and not waiting:
            # Handed over before, and its training runs or ran: the listener stopped between
            # the hand-over and recording it, and reads the message again. Nothing to do.
            logger.info("datasource %d: handed to deployment %d already", ds.id, dep.id)
            return
        if not waiting:
            raise Conflict(
                f"deployment {dep.id} is not waiting for data (its models are "
                f"{', '.join(sorted({r.status.value for r in dep.results})) or 'gone'}); "
                "deploy the configuration again to train on this stream"
            )
        dep.datasource_id = ds.id
        submitted = dep.job_id is not None
        deployment_id = dep.id
    if not submitted:
        start_runner(settings, deployment_id, datasource_id)


def start_runner(settings: Settings, deployment_id: int, datasource_id: int) -> None:
    """Start the deployment's runner, unless it runs already (a hand-over made again)."""
    name = runner_name(settings, deployment_id)
    if not pool.start(settings, name, _run, settings, deployment_id, datasource_id):
        logger.info("deployment %d: its runner is running already", deployment_id)
        return
    logger.info("deployment %d: training started on datasource %d", deployment_id, datasource_id)


def stop_runner(
    settings: Settings, deployment_id: int, job_id: str | None, timeout: float = 60.0
) -> bool:
    """Stop the deployment's Ray job, then cancel its runner task and the training tasks the
    pool runs for it (a job's driver, once killed, cancels nothing); True if something was
    running. A cancelled training task aborts its Ray Train run, which frees its placement
    group."""
    stopped = False
    if job_id:
        from kafkaml_ray.train.submit import job_client

        with contextlib.suppress(Exception):
            stopped = job_client(settings).stop_job(job_id)
    return pool.cancel(settings, runner_name(settings, deployment_id), timeout) > 0 or stopped
