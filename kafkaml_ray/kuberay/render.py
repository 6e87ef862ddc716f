"""Render the KubeRay objects of kafkaml-ray as plain dicts (``ray.io/v1``): the long-lived
RayCluster, a training deployment's RayJob, an inference's RayService and its Serve config
(``serveConfigV2``), from arguments or from store rows, and as YAML (`to_yaml`).

`ClusterSpec` is the shape of a Ray cluster (images, Secrets, head and worker groups). Nothing
here talks to Kubernetes: `kafkaml_ray.kuberay.api` applies what this module renders.

>>> rc = render_raycluster("small", ClusterSpec(gpu_max_workers=0, cpu_max_workers=8))
>>> [(g["groupName"], g["replicas"], g["minReplicas"], g["maxReplicas"])
...  for g in rc["spec"]["workerGroupSpecs"]]
[('cpu', 1, 1, 8)]
>>> print(to_yaml(rc).splitlines()[0])
apiVersion: ray.io/v1
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, model_validator

from kafkaml_ray.errors import InvalidInput
from kafkaml_ray.options import ServingOptions, checked
from kafkaml_ray.serve.options import serve_application

__all__ = [
    "ClusterSpec",
    "Kind",
    "KINDS",
    "CLUSTER_NAME",
    "GROUP",
    "VERSION",
    "PART_OF",
    "RAY_VERSION",
    "ARTIFACTS_MOUNT",
    "render_raycluster",
    "render_rayjob",
    "render_rayservice",
    "serve_config",
    "from_deployment",
    "from_inference",
    "rayjob_name",
    "rayservice_name",
    "to_yaml",
]

GROUP = "ray.io"
VERSION = "v1"
Kind = Literal["RayCluster", "RayJob", "RayService"]
#: Each kind and its resource name (plural) under ``ray.io/v1``.
KINDS: dict[str, str] = {
    "RayCluster": "rayclusters",
    "RayJob": "rayjobs",
    "RayService": "rayservices",
}
#: Name of the long-lived RayCluster (``kuberay/raycluster.yaml``).
CLUSTER_NAME = "kafkaml"
RAY_VERSION = "2.60.0"
PART_OF = {"app.kubernetes.io/part-of": "kafkaml-ray"}
ARTIFACTS_MOUNT = "/artifacts"


class ClusterSpec(BaseModel, frozen=True, extra="forbid"):
    """The shape of a Ray cluster: images, Secrets, and the head and worker groups.

    The head takes no Ray work (``num-cpus: 0``); CPU and GPU worker groups scale between
    their minimum and maximum with KubeRay's in-tree autoscaler. Quantities are
    Kubernetes quantities (``"4"``, ``"500m"``, ``"16Gi"``).
    """

    image: str = "kafkaml-ray:0.1.0"
    """Image of the head and the CPU workers (the Dockerfile built on rayproject/ray)."""
    gpu_image: str = "kafkaml-ray:0.1.0-gpu"
    """Image of the GPU workers (the Dockerfile built on rayproject/ray's -gpu image)."""
    env_secret: str = "kafkaml-ray-env"
    """Secret whose keys become every Ray container's environment (``KAFKAML_*``, ``AWS_*``)."""
    auth_secret: str = "kafkaml-ray-auth"
    """Secret holding Ray's auth token under the key ``auth_token``."""
    artifacts_claim: str | None = "kafkaml-artifacts"
    """PersistentVolumeClaim mounted at ``/artifacts`` on every Ray pod; None when the
    artifacts live in an object store (``KAFKAML_ARTIFACTS=s3://...``)."""
    head_cpu: str = "2"
    head_memory: str = "8Gi"
    cpu_min_workers: int = Field(1, ge=0)
    cpu_max_workers: int = Field(4, ge=0)
    worker_cpu: str = "4"
    worker_memory: str = "16Gi"
    gpu_min_workers: int = Field(0, ge=0)
    gpu_max_workers: int = Field(2, ge=0)
    """Most GPU worker pods; 0 leaves the GPU group out."""
    gpus_per_worker: int = Field(1, ge=1)
    """``nvidia.com/gpu`` limit of a GPU worker pod."""
    gpu_worker_cpu: str = "8"
    gpu_worker_memory: str = "32Gi"
    idle_timeout_s: int = Field(60, ge=0)
    """Seconds an idle worker waits before the autoscaler removes it."""
    worker_idle_s: float = Field(60.0, gt=0)
    """Seconds a Ray node keeps an idle worker process beyond one per CPU, for the next
    task to start on warm (``KAFKAML_WORKER_IDLE_S`` of the local stack; Ray's own is 1)."""

    @model_validator(mode="after")
    def _ranges(self) -> ClusterSpec:
        if self.cpu_min_workers > self.cpu_max_workers:
            raise ValueError("cpu_min_workers is above cpu_max_workers")
        if self.gpu_min_workers > self.gpu_max_workers:
            raise ValueError("gpu_min_workers is above gpu_max_workers")
        return self


def rayjob_name(deployment_id: int) -> str:
    """Name of the RayJob (and of its Ray job) that trains deployment ``deployment_id``."""
    return f"kafkaml-training-{deployment_id}"


def rayservice_name(inference_id: int) -> str:
    """Name of the RayService that serves inference ``inference_id``."""
    return f"kafkaml-inference-{inference_id}"


def _metadata(name: str, **labels: str) -> dict[str, Any]:
    return {"name": name, "labels": {**PART_OF, **labels}}


def _pod(
    cluster: ClusterSpec,
    container: str,
    image: str,
    cpu: str,
    memory: str,
    gpus: int = 0,
    ports: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    resources: dict[str, Any] = {"cpu": cpu, "memory": memory}
    limits = {**resources, "nvidia.com/gpu": gpus} if gpus else resources
    mounts = [{"name": "ray-logs", "mountPath": "/tmp/ray"}]
    volumes: list[dict[str, Any]] = [{"name": "ray-logs", "emptyDir": {}}]
    if cluster.artifacts_claim:
        mounts.append({"name": "artifacts", "mountPath": ARTIFACTS_MOUNT})
        volumes.append(
            {"name": "artifacts", "persistentVolumeClaim": {"claimName": cluster.artifacts_claim}}
        )
    spec: dict[str, Any] = {
        "containers": [
            {
                "name": container,
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "envFrom": [{"secretRef": {"name": cluster.env_secret}}],
                "env": [
                    {
                        "name": "RAY_idle_worker_killing_time_threshold_ms",
                        "value": str(int(cluster.worker_idle_s * 1000)),
                    }
                ],
                "resources": {"requests": dict(resources), "limits": limits},
                "volumeMounts": mounts,
                **({"ports": ports} if ports else {}),
            }
        ],
        "volumes": volumes,
        # the ray user of rayproject images is in group 100 ("users"): it can write /artifacts
        "securityContext": {"fsGroup": 100},
    }
    if gpus:
        spec["tolerations"] = [
            {"key": "nvidia.com/gpu", "operator": "Exists", "effect": "NoSchedule"}
        ]
    return {"spec": spec}


def _cluster_spec(cluster: ClusterSpec, gpu: bool) -> dict[str, Any]:
    """The ``spec`` of a RayCluster (also a RayJob's ``rayClusterSpec`` and a RayService's
    ``rayClusterConfig``); ``gpu`` adds the GPU worker group."""
    head_ports = [
        {"name": "gcs-server", "containerPort": 6379},
        {"name": "dashboard", "containerPort": 8265},
        {"name": "client", "containerPort": 10001},
        {"name": "serve", "containerPort": 8000},
    ]
    workers = [
        {
            "groupName": "cpu",
            "replicas": cluster.cpu_min_workers,
            "minReplicas": cluster.cpu_min_workers,
            "maxReplicas": cluster.cpu_max_workers,
            "rayStartParams": {},
            "template": _pod(
                cluster, "ray-worker", cluster.image, cluster.worker_cpu, cluster.worker_memory
            ),
        }
    ]
    if gpu:
        workers.append(
            {
                "groupName": "gpu",
                "replicas": cluster.gpu_min_workers,
                "minReplicas": cluster.gpu_min_workers,
                "maxReplicas": cluster.gpu_max_workers,
                "rayStartParams": {},  # KubeRay passes --num-gpus from the nvidia.com/gpu limit
                "template": _pod(
                    cluster,
                    "ray-worker",
                    cluster.gpu_image,
                    cluster.gpu_worker_cpu,
                    cluster.gpu_worker_memory,
                    gpus=cluster.gpus_per_worker,
                ),
            }
        )
    return {
        "rayVersion": RAY_VERSION,
        "enableInTreeAutoscaling": True,
        "autoscalerOptions": {
            "upscalingMode": "Default",
            "idleTimeoutSeconds": cluster.idle_timeout_s,
        },
        "authOptions": {"mode": "token", "secretName": cluster.auth_secret},
        "headGroupSpec": {
            # Ray work goes to the workers; the head keeps the GCS, dashboard and controllers
            "rayStartParams": {"num-cpus": "0"},
            "template": _pod(
                cluster,
                "ray-head",
                cluster.image,
                cluster.head_cpu,
                cluster.head_memory,
                ports=head_ports,
            ),
        },
        "workerGroupSpecs": workers,
    }


def render_raycluster(
    name: str = CLUSTER_NAME, cluster: ClusterSpec | None = None
) -> dict[str, Any]:
    """The long-lived RayCluster: the control listener and training without a RayJob run
    there. Its GPU worker group is left out when ``cluster.gpu_max_workers`` is 0.

    >>> rc = render_raycluster()
    >>> [g["groupName"] for g in rc["spec"]["workerGroupSpecs"]]
    ['cpu', 'gpu']
    """
    cluster = cluster or ClusterSpec()
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayCluster",
        "metadata": _metadata(name),
        "spec": _cluster_spec(cluster, gpu=cluster.gpu_max_workers > 0),
    }


def _entrypoint(deployment_id: int) -> str:
    from kafkaml_ray.train.submit import entrypoint  # the one `train deploy --submit` uses

    return entrypoint(deployment_id)


def render_rayjob(
    deployment_id: int,
    *,
    gpu: bool = False,
    cluster: ClusterSpec | None = None,
    cluster_name: str | None = None,
) -> dict[str, Any]:
    """A RayJob that trains a training deployment.

    By default the RayJob brings its own Ray cluster (with a GPU worker group when ``gpu``)
    and removes it when the job ends; with ``cluster_name`` it runs on that existing
    RayCluster instead. The Ray job's id is `rayjob_name` (``kafkaml-training-<id>``).

    >>> job = render_rayjob(5, gpu=True)
    >>> job["spec"]["entrypoint"]
    'python -m kafkaml_ray.train --deployment 5'
    >>> render_rayjob(5, cluster_name="kafkaml")["spec"]["clusterSelector"]
    {'ray.io/cluster': 'kafkaml'}
    """
    if isinstance(deployment_id, bool) or not isinstance(deployment_id, int) or deployment_id < 1:
        raise InvalidInput(
            f"a training deployment id is a whole number >= 1, not {deployment_id!r}"
        )
    cluster = cluster or ClusterSpec()
    if gpu and cluster.gpu_max_workers == 0:
        cluster = cluster.model_copy(update={"gpu_max_workers": 1})
    name = rayjob_name(deployment_id)
    spec: dict[str, Any] = {
        "entrypoint": _entrypoint(deployment_id),
        "jobId": name,
        "submissionMode": "K8sJobMode",
        "backoffLimit": 0,
    }
    if cluster_name:
        spec["clusterSelector"] = {"ray.io/cluster": cluster_name}
    else:
        spec["shutdownAfterJobFinishes"] = True
        spec["ttlSecondsAfterFinished"] = 600
        spec["rayClusterSpec"] = _cluster_spec(cluster, gpu=gpu)
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayJob",
        "metadata": _metadata(name, **{"kafkaml-ray/deployment": str(deployment_id)}),
        "spec": spec,
    }


def serve_config(inference_id: int, **options: Any) -> dict[str, Any]:
    """The Ray Serve config (``serveConfigV2``) of an inference: application
    ``inference-<id>`` with its ``KafkaIngress`` and ``Predictor`` deployments, with the
    options that local Serve gets (`kafkaml_ray.serve.options`). ``options`` are
    `~kafkaml_ray.options.ServingOptions`, checked as the API checks them.

    Both deployments get ``replicas`` replicas, or autoscale between ``min_replicas`` and
    ``max_replicas`` when both are set (starting at ``replicas``; the ingress on consumer
    lag). A predictor takes ``gpu_fraction`` of a GPU (0.25: four predictors share one).

    >>> cfg = serve_config(3, replicas=2, min_replicas=1, max_replicas=4)
    >>> scaling = cfg["applications"][0]["deployments"][0]["autoscaling_config"]
    >>> scaling["min_replicas"], scaling["max_replicas"], scaling["initial_replicas"]
    (1, 4, 2)
    """
    if not isinstance(inference_id, int) or inference_id < 1:
        raise InvalidInput(f"inference_id is a whole number >= 1, not {inference_id!r}")
    return {"applications": [serve_application(inference_id, checked(ServingOptions, **options))]}


def render_rayservice(
    inference_id: int, *, cluster: ClusterSpec | None = None, **options: Any
) -> dict[str, Any]:
    """A RayService serving an inference: `serve_config` on a Ray cluster of its own, with
    a GPU worker group when ``gpu_fraction`` > 0 (sized so that ``max_replicas`` fractional
    predictors fit). The app reads the rest (topics, format, batching) from the store row.
    """
    cluster = cluster or ClusterSpec()
    config = serve_config(inference_id, **options)
    serving = ServingOptions(**options)
    gpu_fraction = serving.gpu_fraction
    if gpu_fraction:
        if gpu_fraction > cluster.gpus_per_worker:
            raise InvalidInput(
                f"gpu_fraction {gpu_fraction} is more than a GPU worker has "
                f"({cluster.gpus_per_worker} GPU)"
            )
        most = max(serving.replicas, serving.max_replicas or 0)  # (min <= max)
        per_worker = math.floor(cluster.gpus_per_worker / gpu_fraction)
        needed = math.ceil(most / per_worker)
        cluster = cluster.model_copy(
            update={"gpu_max_workers": max(cluster.gpu_max_workers, needed)}
        )
    return {
        "apiVersion": f"{GROUP}/{VERSION}",
        "kind": "RayService",
        "metadata": _metadata(
            rayservice_name(inference_id), **{"kafkaml-ray/inference": str(inference_id)}
        ),
        "spec": {
            "serveConfigV2": yaml.safe_dump(config, sort_keys=False),
            "rayClusterConfig": _cluster_spec(cluster, gpu=bool(gpu_fraction)),
        },
    }


def from_deployment(
    row: Any, *, cluster: ClusterSpec | None = None, cluster_name: str | None = None
) -> dict[str, Any]:
    """`render_rayjob` for a `~kafkaml_ray.store.TrainingDeployment` row (GPUs when its
    ``gpu_fraction`` > 0)."""
    return render_rayjob(
        row.id, gpu=row.gpu_fraction > 0, cluster=cluster, cluster_name=cluster_name
    )


def from_inference(row: Any, *, cluster: ClusterSpec | None = None) -> dict[str, Any]:
    """`render_rayservice` for a `~kafkaml_ray.store.Inference` row."""
    return render_rayservice(row.id, cluster=cluster, **ServingOptions.of(row).model_dump())


def to_yaml(manifests: Mapping[str, Any] | Iterable[Mapping[str, Any]]) -> str:
    """One manifest, or several as a multi-document YAML stream (for ``kubectl apply -f``)."""
    docs = [manifests] if isinstance(manifests, Mapping) else list(manifests)
    return yaml.dump_all([dict(d) for d in docs], Dumper=_Dumper, sort_keys=False)


class _Dumper(yaml.SafeDumper):
    """Multi-line text (``serveConfigV2``) as a readable ``|`` block."""


def _text(dumper: yaml.SafeDumper, data: str) -> yaml.Node:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _text)
