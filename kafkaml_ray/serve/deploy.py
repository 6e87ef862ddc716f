"""Starting, stopping and inspecting inference applications on Ray Serve."""

from __future__ import annotations

import logging
import time
from typing import Any

from kafkaml_ray.errors import InvalidInput, Unavailable
from kafkaml_ray.serve.app import app_for
from kafkaml_ray.serve.options import app_name, deployment_options, route_prefix
from kafkaml_ray.serve.spec import spec_from_store
from kafkaml_ray.settings import Settings
from kafkaml_ray.store import Inference, Store

__all__ = [
    "start_inference",
    "stop_inference",
    "app_status",
    "ensure_topics",
    "placement_wait",
]

logger = logging.getLogger(__name__)


def ensure_topics(settings: Settings, inf: Any) -> None:
    """Create the input (with a partition per possible replica), output and DLQ topics;
    refuse more replicas than the input topic has partitions."""
    from confluent_kafka.admin import AdminClient, NewTopic

    admin = AdminClient(settings.kafka_config())
    needed = max(inf.replicas, inf.max_replicas or 0, 1)
    try:
        topics = admin.list_topics(timeout=10).topics
    except Exception as e:  # noqa: BLE001 - KafkaException and friends
        raise Unavailable(f"cannot reach Kafka at {settings.bootstrap_servers}: {e}") from None
    new = []
    if inf.input_topic in topics:
        have = len(topics[inf.input_topic].partitions)
        if have < needed:
            raise InvalidInput(
                f"input topic {inf.input_topic!r} has {have} partitions, fewer than the "
                f"{needed} replicas asked for (each needs a partition): add partitions or ask "
                "for fewer replicas"
            )
    else:
        new.append(NewTopic(inf.input_topic, needed))
    for t in (inf.output_topic, f"{inf.output_topic}.dlq"):
        if t not in topics:
            new.append(NewTopic(t, 1))
    if new:
        for topic, f in admin.create_topics(new).items():
            try:
                f.result(30)
            except Exception as e:  # noqa: BLE001 - created meanwhile
                if "TOPIC_ALREADY_EXISTS" not in str(e):
                    raise Unavailable(f"cannot create topic {topic!r}: {e}") from None


def _name(status: Any) -> str:
    """An enum member's value ("RUNNING"), whatever enum flavour Serve uses."""
    return str(getattr(status, "value", status))


_started: set[str] = set()


def _serve(settings: Settings):
    """Ray Serve, started once per cluster with HTTP on 127.0.0.1:serve_port."""
    import ray
    from ray import serve

    from kafkaml_ray._private.rayutil import ensure_ray, ray_address

    if not ray.is_initialized() and ray_address(settings) is None:
        # A Ray started inside this process would take the inference down when it exits.
        raise Unavailable(
            "no Ray cluster to serve on: start the local stack (`kafkaml-ray up`) or set "
            "RAY_ADDRESS"
        )
    ensure_ray(settings)

    cluster = ray.get_runtime_context().gcs_address
    if cluster not in _started:
        serve.start(http_options={"host": "127.0.0.1", "port": settings.serve_port})
        _started.add(cluster)
    return serve


def start_inference(
    settings: Settings,
    inference_id: int,
    timeout: float = 300.0,
    autoscaling: dict[str, Any] | None = None,
) -> str:
    """Deploy (or redeploy) the inference's Serve application and wait until it runs.

    Returns ``"running"``, or raises with the reason Serve gives."""
    from kafkaml_ray._private.rayutil import check_shared_state

    with Store.for_url(settings.db_url).session() as s:
        inf = s.get_one(Inference, inference_id)
        ensure_topics(settings, inf)
        ingress, predictor = deployment_options(inf, autoscaling=autoscaling)
    spec = spec_from_store(settings, inference_id)
    serve = _serve(settings)
    check_shared_state(settings)
    serve.run(
        app_for(spec, ingress, predictor),
        name=app_name(inference_id),
        route_prefix=route_prefix(inference_id),
        blocking=False,
    )
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        status, message = app_status(settings, inference_id)
        if status == "RUNNING":
            return "running"
        if status in ("DEPLOY_FAILED", "UNHEALTHY"):
            raise Unavailable(f"inference {inference_id} failed to deploy: {message}")
        time.sleep(0.5)
    raise Unavailable(f"inference {inference_id} did not start in {timeout:.0f}s")


def stop_inference(settings: Settings, inference_id: int) -> None:
    serve = _serve(settings)
    serve.delete(app_name(inference_id), _blocking=True)


def app_status(settings: Settings, inference_id: int) -> tuple[str, str]:
    """Serve's status of the application (``NOT_STARTED`` when there is none) and message."""
    serve = _serve(settings)
    app = serve.status().applications.get(app_name(inference_id))
    if app is None:
        return "NOT_STARTED", ""
    message = app.message or ""
    for name, dep in app.deployments.items():
        if dep.message and _name(dep.status) != "HEALTHY":
            message += f" {name}: {dep.message}"
    return _name(app.status), message.strip()


def running_replicas(settings: Settings, inference_id: int) -> dict[str, int]:
    serve = _serve(settings)
    app = serve.status().applications.get(app_name(inference_id))
    if app is None:
        return {}
    return {
        name: sum(n for state, n in dep.replica_states.items() if _name(state) == "RUNNING")
        for name, dep in app.deployments.items()
    }


def placement_wait(settings: Settings, inference_id: int) -> str | None:
    """When Serve wants more replicas of the inference than Ray can place: how many it
    wants, how many run, and what they wait for (needs, free, holders); else None."""
    from kafkaml_ray._private.rayutil import resource_wait

    with Store.for_url(settings.db_url).session() as s:
        ingress, predictor = deployment_options(s.get_one(Inference, inference_id))
    options = {"KafkaIngress": ingress, "Predictor": predictor}
    serve = _serve(settings)
    app = serve.status().applications.get(app_name(inference_id))
    waits = []
    for name, dep in (app.deployments if app else {}).items():
        states = {_name(state): n for state, n in dep.replica_states.items()}
        running, starting = states.get("RUNNING", 0), states.get("STARTING", 0)
        actor = options.get(name, {}).get("ray_actor_options", {})
        need = {"CPU": actor.get("num_cpus", 0.0), "GPU": actor.get("num_gpus", 0.0)}
        why = resource_wait(need) if starting else None
        if why:
            waits.append(f"{name} wants {running + starting} replicas, {running} run; {why}")
    return "; ".join(waits) or None
