"""The Serve options of an inference, built once for local Serve and for KubeRay.

`deployment_options` gives the ``KafkaIngress`` and ``Predictor`` deployment options that
`kafkaml_ray.serve.deploy` passes to ``serve.run`` and `serve_application` writes into a
RayService's ``serveConfigV2``; a parity test holds the two to the same application. This
module imports no Ray, so manifests render without it.

>>> from types import SimpleNamespace as Row
>>> row = Row(replicas=1, min_replicas=1, max_replicas=4, gpu_fraction=0.0, batch_size=512)
>>> ingress, predictor = deployment_options(row)
>>> ingress["ray_actor_options"], predictor["ray_actor_options"]
({'num_cpus': 0.25}, {'num_cpus': 0.0})
>>> ingress["autoscaling_config"]["policy"]["policy_function"]
'kafkaml_ray.serve.autoscale:LagPolicy'
>>> serve_application(3, row)["route_prefix"]
'/inference/3'
"""

from __future__ import annotations

from typing import Any

from kafkaml_ray.options import DEFAULT_BATCH_SIZE
from kafkaml_ray.serve.autoscale import POLICY

__all__ = [
    "DEFAULT_BATCH_SIZE",
    "INGRESS_CPUS",
    "PREDICTOR_CPUS",
    "TARGET_LAG",
    "SERVE_IMPORT_PATH",
    "app_name",
    "route_prefix",
    "deployment_options",
    "serve_application",
]

#: CPUs reserved by an ingress replica (it predicts on CPU) and by a GPU predictor replica.
#: A CPU inference's Predictor only answers HTTP and reserves no CPU, so that two CPU
#: inferences and a training fit on 2 CPUs.
INGRESS_CPUS, PREDICTOR_CPUS = 0.25, 0.5
#: Consumer lag per ingress replica above which the lag policy adds replicas.
TARGET_LAG = 1000.0
#: The application builder that a serve config (and KubeRay) imports.
SERVE_IMPORT_PATH = "kafkaml_ray.serve.app:build_app"


def app_name(inference_id: int) -> str:
    return f"inference-{inference_id}"


def route_prefix(inference_id: int) -> str:
    return f"/inference/{inference_id}"


#: The ingress replicas' Kafka consumer settings, beside the group id and the cluster's own
#: (the inference benchmark's echo loop uses them too, to be the ingress without a model).
INGRESS_CONSUMER = {
    "enable.auto.commit": False,
    "auto.offset.reset": "earliest",
    "partition.assignment.strategy": "cooperative-sticky",
    "max.poll.interval.ms": 300000,
    # A killed replica's partitions move to the others within seconds.
    "session.timeout.ms": 10000,
    "heartbeat.interval.ms": 2000,
}


def deployment_options(
    inf: Any, target_lag: float = TARGET_LAG, autoscaling: dict[str, Any] | None = None
) -> tuple[dict, dict]:
    """Serve options of (KafkaIngress, Predictor) for an inference's scaling: ``inf`` has
    ``replicas``, ``min_replicas``, ``max_replicas``, ``gpu_fraction`` and ``batch_size``
    (an `~kafkaml_ray.store.Inference` row, or what a manifest is rendered from).

    Autoscaling is on when the bounds are set: the ingress on consumer lag (our
    `~kafkaml_ray.serve.autoscale.LagPolicy`, ``autoscaling`` overriding Serve's settings),
    the predictor on ongoing requests, both between the bounds and starting at ``replicas``.
    """
    ingress: dict[str, Any] = {"ray_actor_options": {"num_cpus": INGRESS_CPUS}}
    gpu = {"num_cpus": PREDICTOR_CPUS, "num_gpus": float(inf.gpu_fraction)}
    predictor: dict[str, Any] = {
        "ray_actor_options": gpu if inf.gpu_fraction else {"num_cpus": 0.0},
        "max_ongoing_requests": max(16, 2 * inf.batch_size),
    }
    if inf.min_replicas is None or inf.max_replicas is None:
        ingress["num_replicas"] = predictor["num_replicas"] = inf.replicas
        return ingress, predictor
    lo, hi = inf.min_replicas, inf.max_replicas
    start = min(max(inf.replicas, lo), hi)
    bounds = {"min_replicas": lo, "max_replicas": hi, "initial_replicas": start}
    ingress["autoscaling_config"] = {
        **bounds,
        "metrics_interval_s": 2.0,
        "look_back_period_s": 10.0,
        "upscale_delay_s": 5.0,
        "downscale_delay_s": 30.0,
        "policy": {"policy_function": POLICY, "policy_kwargs": {"target_lag": target_lag}},
        **(autoscaling or {}),
    }
    predictor["autoscaling_config"] = {**bounds, "target_ongoing_requests": 2}
    return ingress, predictor


def serve_application(inference_id: int, inf: Any) -> dict[str, Any]:
    """The inference as one application of a serve config (``serveConfigV2``): the app
    that `kafkaml_ray.serve.deploy.start_inference` runs locally, built by import path."""
    ingress, predictor = deployment_options(inf)
    return {
        "name": app_name(inference_id),
        "route_prefix": route_prefix(inference_id),
        "import_path": SERVE_IMPORT_PATH,
        "args": {"inference_id": inference_id},
        "deployments": [{"name": "KafkaIngress", **ingress}, {"name": "Predictor", **predictor}],
    }
