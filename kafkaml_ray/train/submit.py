"""Training as Ray jobs (``kafkaml-ray train deploy --submit``), through Ray's
`JobSubmissionClient`. The entrypoint is the one a KubeRay RayJob runs:
``python -m kafkaml_ray.train --deployment <id>``."""

from __future__ import annotations

import uuid

from kafkaml_ray.errors import Unavailable
from kafkaml_ray.redaction import has_credentials
from kafkaml_ray.settings import Settings

__all__ = ["job_client", "job_env", "submit_training", "entrypoint", "dashboard_address"]


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


#: Words that mark a setting as secret (``KAFKAML_KAFKA_SASL_PASSWORD``, ...).
_SECRET = ("PASSWORD", "SECRET", "TOKEN", "KEY")


def job_env(settings: Settings) -> dict[str, str]:
    """The settings a training job gets in its ``runtime_env``, which Ray's dashboard shows to
    anyone who opens it: none that is secret. A database URL with a password, and Kafka
    passwords, keys or tokens, reach the job from the cluster's own environment instead (the
    local head is started with them; a KubeRay cluster from its Secret).

    >>> from kafkaml_ray.settings import Settings
    >>> env = job_env(Settings(db="postgresql://kml:s3cret@db/kml", kafka={"sasl.password": "x"}))
    >>> "KAFKAML_DB" in env, "KAFKAML_KAFKA_SASL_PASSWORD" in env, env["TF_CPP_MIN_LOG_LEVEL"]
    (False, False, '2')
    >>> "KAFKAML_DB" in job_env(Settings(db="postgresql://kml@db/kml?password=s3cret"))
    False
    >>> "KAFKAML_ARTIFACTS" in job_env(Settings(artifacts="s3://AKIA:s3cret@bucket/kml"))
    False
    """
    env = {k: v for k, v in settings.env().items() if k != "RAY_ADDRESS"}
    for k in list(env):
        kafka_secret = k.startswith("KAFKAML_KAFKA_") and any(w in k for w in _SECRET)
        if kafka_secret or (k in ("KAFKAML_DB", "KAFKAML_ARTIFACTS") and has_credentials(env[k])):
            del env[k]
    env["TF_CPP_MIN_LOG_LEVEL"] = "2"
    return env


def submit_training(settings: Settings, deployment_id: int) -> str:
    """Submit the deployment's training as a Ray job; return the job id."""
    env = job_env(settings)
    return job_client(settings).submit_job(
        entrypoint=entrypoint(deployment_id),
        submission_id=f"kafkaml-training-{deployment_id}-{uuid.uuid4().hex[:6]}",
        runtime_env={"env_vars": env},
        metadata={"kafkaml_deployment": str(deployment_id)},
    )
