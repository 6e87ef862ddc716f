"""Training as Ray jobs (``kafkaml-ray train deploy --submit``), through Ray's
`JobSubmissionClient`. The entrypoint is the one a KubeRay RayJob runs:
``python -m kafkaml_ray.train --deployment <id>``."""

from __future__ import annotations

import uuid

from kafkaml_ray.errors import Unavailable
from kafkaml_ray.settings import Settings

__all__ = ["job_client", "submit_training", "entrypoint", "dashboard_address"]


def dashboard_address(settings: Settings) -> str:
    """The job server: RAY_ADDRESS when it is an http(s) URL, else the local head's."""
    if settings.ray_address and settings.ray_address.startswith(("http://", "https://")):
        return settings.ray_address
    return f"http://127.0.0.1:{settings.dashboard_port}"


def job_client(settings: Settings):
    from ray.job_submission import JobSubmissionClient

    from kafkaml_ray._private.rayutil import token_auth

    token_auth()
    address = dashboard_address(settings)
    try:
        return JobSubmissionClient(address)
    except Exception as e:  # noqa: BLE001
        raise Unavailable(f"the Ray job server at {address} does not answer: {e}") from None


def entrypoint(deployment_id: int) -> str:
    return f"python -m kafkaml_ray.train --deployment {deployment_id}"


def submit_training(settings: Settings, deployment_id: int) -> str:
    """Submit the deployment's training as a Ray job; return the job id."""
    env = {k: v for k, v in settings.env().items() if k != "RAY_ADDRESS"}
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return job_client(settings).submit_job(
        entrypoint=entrypoint(deployment_id),
        submission_id=f"kafkaml-training-{deployment_id}-{uuid.uuid4().hex[:6]}",
        runtime_env={"env_vars": env},
        metadata={"kafkaml_deployment": str(deployment_id)},
    )
