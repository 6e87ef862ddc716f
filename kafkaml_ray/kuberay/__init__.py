"""kafkaml-ray on Kubernetes with KubeRay: render RayCluster, RayJob and RayService manifests,
and apply, inspect and delete them through the Kubernetes API (``ray.io/v1``).

Every pod runs the project's image (``kafkaml-ray:0.1.0``, and ``kafkaml-ray:0.1.0-gpu`` for
GPU workers, built from the repository's ``Dockerfile``), reads its settings (``KAFKAML_*``)
from the Secret ``kafkaml-ray-env`` and keeps Ray's token authentication on, with the token
from the Secret ``kafkaml-ray-auth``. No secret ever appears in a rendered manifest.

>>> from kafkaml_ray.kuberay import render_rayservice
>>> svc = render_rayservice(3, replicas=2, gpu_fraction=0.25)
>>> svc["kind"], svc["metadata"]["name"]
('RayService', 'kafkaml-inference-3')
>>> import yaml
>>> app = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]
>>> app["name"], app["args"], app["deployments"][1]["ray_actor_options"]["num_gpus"]
('inference-3', {'inference_id': 3}, 0.25)
"""

from __future__ import annotations

import copy
import json
import logging
import math
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

import yaml
from pydantic import BaseModel, Field, ValidationError, model_validator

from kafkaml_ray.errors import Conflict, InvalidInput, KafkaMLError, NotFound, Unavailable
from kafkaml_ray.serve.options import DEFAULT_BATCH_SIZE, serve_application

__all__ = [
    "ClusterSpec",
    "KubeRayClient",
    "ObjectStatus",
    "Kind",
    "KINDS",
    "CLUSTER_NAME",
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

logger = logging.getLogger(__name__)

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

    @model_validator(mode="after")
    def _ranges(self) -> ClusterSpec:
        if self.cpu_min_workers > self.cpu_max_workers:
            raise ValueError("cpu_min_workers is above cpu_max_workers")
        if self.gpu_min_workers > self.gpu_max_workers:
            raise ValueError("gpu_min_workers is above gpu_max_workers")
        return self


class _Serving(BaseModel, frozen=True):
    inference_id: int = Field(ge=1)
    replicas: int = Field(1, ge=1)
    min_replicas: int | None = Field(None, ge=1)
    max_replicas: int | None = Field(None, ge=1)
    gpu_fraction: float = Field(0.0, ge=0)
    batch_size: int = Field(DEFAULT_BATCH_SIZE, ge=1)

    @model_validator(mode="after")
    def _check(self) -> _Serving:
        lo, hi = self.min_replicas, self.max_replicas
        if lo is not None and hi is not None and lo > hi:
            raise ValueError(f"min_replicas ({lo}) is above max_replicas ({hi})")
        if self.gpu_fraction > 1 and not self.gpu_fraction.is_integer():
            raise ValueError("a GPU share above 1 must be a whole number of GPUs")
        return self


def _spec(model: type[BaseModel], **values: Any) -> Any:
    try:
        return model(**values)
    except ValidationError as e:
        first = e.errors()[0]
        where = ".".join(str(p) for p in first["loc"])
        raise InvalidInput(f"{where + ': ' if where else ''}{first['msg']}") from None


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
    from kafkaml_ray.train.jobs import entrypoint  # the one `train deploy --submit` uses

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
    'python -m kafkaml_ray.train.job --deployment 5'
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


def serve_config(
    inference_id: int,
    *,
    replicas: int = 1,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    gpu_fraction: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
) -> dict[str, Any]:
    """The Ray Serve config (``serveConfigV2``) of an inference: application
    ``inference-<id>`` with its ``KafkaIngress`` and ``Predictor`` deployments, with the
    options that local Serve gets (`kafkaml_ray.serve.options`).

    Both deployments get ``replicas`` replicas, or autoscale between ``min_replicas`` and
    ``max_replicas`` when either is set (starting at ``replicas``; the ingress on consumer
    lag). A predictor takes ``gpu_fraction`` of a GPU (0.25: four predictors share one).

    >>> cfg = serve_config(3, replicas=2, min_replicas=1, max_replicas=4)
    >>> scaling = cfg["applications"][0]["deployments"][0]["autoscaling_config"]
    >>> scaling["min_replicas"], scaling["max_replicas"], scaling["initial_replicas"]
    (1, 4, 2)
    """
    s = _spec(
        _Serving,
        inference_id=inference_id,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        gpu_fraction=gpu_fraction,
        batch_size=batch_size,
    )
    return {"applications": [serve_application(s.inference_id, s)]}


def render_rayservice(
    inference_id: int,
    *,
    replicas: int = 1,
    min_replicas: int | None = None,
    max_replicas: int | None = None,
    gpu_fraction: float = 0.0,
    batch_size: int = DEFAULT_BATCH_SIZE,
    cluster: ClusterSpec | None = None,
) -> dict[str, Any]:
    """A RayService serving an inference: `serve_config` on a Ray cluster of its own, with
    a GPU worker group when ``gpu_fraction`` > 0 (sized so that ``max_replicas`` fractional
    predictors fit). The app reads the rest (topics, format, batching) from the store row.
    """
    cluster = cluster or ClusterSpec()
    config = serve_config(
        inference_id,
        replicas=replicas,
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        gpu_fraction=gpu_fraction,
        batch_size=batch_size,
    )
    if gpu_fraction:
        if gpu_fraction > cluster.gpus_per_worker:
            raise InvalidInput(
                f"gpu_fraction {gpu_fraction} is more than a GPU worker has "
                f"({cluster.gpus_per_worker} GPU)"
            )
        most = max(replicas, min_replicas or 0, max_replicas or 0)
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
    return render_rayservice(
        row.id,
        replicas=row.replicas,
        min_replicas=row.min_replicas,
        max_replicas=row.max_replicas,
        gpu_fraction=row.gpu_fraction,
        batch_size=row.batch_size,
        cluster=cluster,
    )


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


# -- the Kubernetes API --------------------------------------------------------------------
@dataclass(frozen=True)
class ObjectStatus:
    """Where a KubeRay object stands, in a word (``state``) and a sentence (``message``)."""

    kind: str
    name: str
    namespace: str
    state: str
    message: str = ""

    @classmethod
    def of(cls, obj: Mapping[str, Any]) -> ObjectStatus:
        meta, status = obj.get("metadata", {}), obj.get("status") or {}
        kind = obj.get("kind", "")
        ready = next((c for c in status.get("conditions") or [] if c.get("type") == "Ready"), None)
        if kind == "RayJob":
            state = status.get("jobStatus") or status.get("jobDeploymentStatus") or "new"
            message = status.get("message", "")
        elif kind == "RayService":
            if ready is not None:
                state = "ready" if ready.get("status") == "True" else "not ready"
            else:
                state = status.get("serviceStatus") or "pending"
            message = (ready or {}).get("message", "")
        else:
            state = status.get("state") or "pending"
            message = status.get("reason", "")
        return cls(kind, meta.get("name", ""), meta.get("namespace", ""), state, message or "")


class KubeRayClient:
    """Create, inspect and delete KubeRay objects through ``CustomObjectsApi`` (``ray.io/v1``).

    Connects with a kubeconfig (``kubeconfig``/``context``; the default one, or the pod's
    service account inside a cluster), or to another cluster with ``host`` and a bearer
    ``token`` (Kafka-ML lets an inference go to another cluster). `apply` creates an
    object, and replaces it when it exists already (409).

    Parameters
    ----------
    kubeconfig, context
        A kubeconfig file (default ``$KUBECONFIG`` or ``~/.kube/config``) and its context.
    host, token
        An API server URL and a bearer token, instead of a kubeconfig.
    ca_cert, verify_ssl
        The API server's CA bundle (with ``host``), or no TLS verification at all.
    namespace
        Where objects go: default the context's namespace, else ``default``.

    Examples
    --------
    >>> client = KubeRayClient(host="https://k8s.example:6443", token="...")  # doctest: +SKIP
    >>> client.apply(render_rayservice(3, gpu_fraction=0.25))                # doctest: +SKIP
    >>> client.status("RayService", "kafkaml-inference-3")                   # doctest: +SKIP
    [ObjectStatus(kind='RayService', name='kafkaml-inference-3', ..., state='ready', ...)]
    """

    def __init__(
        self,
        *,
        kubeconfig: str | None = None,
        context: str | None = None,
        host: str | None = None,
        token: str | None = None,
        ca_cert: str | None = None,
        verify_ssl: bool = True,
        namespace: str | None = None,
    ):
        try:
            from kubernetes import client, config
        except ImportError:
            raise Unavailable(
                "the kubernetes client is not installed: pip install 'kafkaml-ray[k8s]'"
            ) from None
        cfg = client.Configuration()
        if host:
            if not token:
                raise InvalidInput("a host needs a token (a service account's bearer token)")
            cfg.host = host.rstrip("/")
            cfg.api_key = {"authorization": token}
            cfg.api_key_prefix = {"authorization": "Bearer"}
            cfg.ssl_ca_cert = ca_cert
        else:
            namespace = namespace or self._load_config(config, cfg, kubeconfig, context)
        cfg.verify_ssl = verify_ssl
        cfg.retries = 1
        self.host = cfg.host
        self.namespace = namespace or "default"
        self._api = client.CustomObjectsApi(client.ApiClient(cfg))

    @staticmethod
    def _load_config(config: Any, cfg: Any, kubeconfig: str | None, context: str | None):
        """Fill ``cfg`` from a kubeconfig (or the pod's service account); return the
        context's namespace."""
        import os

        try:
            config.load_kube_config(
                config_file=kubeconfig, context=context, client_configuration=cfg
            )
            contexts, active = config.list_kube_config_contexts(config_file=kubeconfig)
        except (config.ConfigException, OSError) as e:
            if kubeconfig is None and context is None and os.environ.get("KUBERNETES_SERVICE_HOST"):
                config.load_incluster_config(client_configuration=cfg)
                return None
            where = kubeconfig or os.environ.get("KUBECONFIG") or "~/.kube/config"
            raise Unavailable(
                f"no usable kubeconfig ({where}): {_one_line(str(e))}; "
                "pass a kubeconfig, or a host and a token"
            ) from None
        chosen = next((c for c in contexts if c["name"] == context), active) if context else active
        return (chosen or {}).get("context", {}).get("namespace")

    def apply(self, manifest: Mapping[str, Any]) -> dict[str, Any]:
        """Create ``manifest``; when it exists already (409), replace it with this one (its
        ``resourceVersion`` taken from the cluster). Returns the object as stored.

        A RayService then rolls out the new Serve config and cluster spec; a RayJob whose
        job has started keeps running as it was (delete it to run it again).
        """
        body = copy.deepcopy(dict(manifest))
        plural, ns, name = self._where(body.get("kind"), body.get("metadata", {}).get("name"))
        ns = body["metadata"].get("namespace") or ns
        try:
            created = self._call(
                "create", plural, ns, name, "create_namespaced_custom_object", body
            )
            logger.info("created %s %s/%s", body["kind"], ns, name)
            return created
        except Conflict:
            pass
        current = self._call("get", plural, ns, name, "get_namespaced_custom_object", name)
        body["metadata"]["resourceVersion"] = current["metadata"]["resourceVersion"]
        replaced = self._call(
            "replace", plural, ns, name, "replace_namespaced_custom_object", name, body
        )
        logger.info("replaced %s %s/%s", body["kind"], ns, name)
        return replaced

    def get(self, kind: Kind, name: str) -> dict[str, Any]:
        """The object as the cluster has it (`~kafkaml_ray.errors.NotFound` if absent)."""
        plural, ns, name = self._where(kind, name)
        return self._call("get", plural, ns, name, "get_namespaced_custom_object", name)

    def status(self, kind: Kind | None = None, name: str | None = None) -> list[ObjectStatus]:
        """One object's status, or those of every kafkaml-ray object of ``kind`` (of every
        kind when None) in the namespace."""
        if name is not None:
            if kind is None:
                raise InvalidInput("a name needs a kind")
            return [ObjectStatus.of(self.get(kind, name))]
        selector = ",".join(f"{k}={v}" for k, v in PART_OF.items())
        out = []
        for k in [kind] if kind else list(KINDS):
            plural, ns, _ = self._where(k, None)
            listed = self._call(
                "list",
                plural,
                ns,
                None,
                "list_namespaced_custom_object",
                label_selector=selector,
            )
            out += [ObjectStatus.of({"kind": k, **item}) for item in listed.get("items", [])]
        return out

    def delete(self, kind: Kind, name: str) -> None:
        """Delete an object (its pods go with it); `~kafkaml_ray.errors.NotFound` if absent."""
        plural, ns, name = self._where(kind, name)
        self._call("delete", plural, ns, name, "delete_namespaced_custom_object", name)
        logger.info("deleted %s %s/%s", kind, ns, name)

    # -- internals -----------------------------------------------------------------------
    def _where(self, kind: Any, name: Any) -> tuple[str, str, Any]:
        if kind not in KINDS:
            raise InvalidInput(f"not a KubeRay kind: {kind!r} (use {', '.join(KINDS)})")
        return KINDS[kind], self.namespace, name

    def _call(self, verb: str, plural: str, ns: str, name: str | None, method: str, *args, **kw):
        from kubernetes.client.exceptions import ApiException
        from urllib3.exceptions import HTTPError

        try:
            return getattr(self._api, method)(
                GROUP, VERSION, ns, plural, *args, _request_timeout=30, **kw
            )
        except ApiException as e:
            raise _api_error(e, verb, plural, ns, name) from None
        except HTTPError as e:
            reason = str(getattr(e, "reason", None) or e).split("): ", 1)[-1]  # no pool repr
            raise Unavailable(
                f"cannot reach the Kubernetes API server at {self.host}: {_one_line(reason)}"
            ) from None


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _api_error(e: Any, verb: str, plural: str, ns: str, name: str | None) -> KafkaMLError:
    """A one-line error for an API server's refusal (``ApiException``)."""
    try:
        body = json.loads(e.body) if e.body else {}
    except (TypeError, ValueError):
        body = {}
    body = body if isinstance(body, dict) and body.get("kind") == "Status" else {}
    message = _one_line(str(body.get("message") or e.reason or e.body or ""))
    what = f"{plural[:-1]} {name!r}" if name else plural
    details = body.get("details") or {}
    if e.status == 404:
        if details.get("kind") == "namespaces":
            return NotFound(f"namespace {ns!r} does not exist in this cluster")
        if details.get("name"):
            return NotFound(f"{what} not found in namespace {ns!r}")
        return Unavailable(
            f"the KubeRay CRDs are not installed in this cluster (404 on {GROUP}/{VERSION} "
            f"{plural}): install the KubeRay operator first"
        )
    if e.status == 401:
        return Unavailable(
            "the Kubernetes API server refused the credentials (401 Unauthorized): "
            "check the token or the kubeconfig"
        )
    if e.status == 403:
        return Unavailable(f"forbidden (403) to {verb} {GROUP} {plural} in {ns!r}: {message}")
    if e.status == 409 and verb == "replace":
        return Conflict(f"{what} in namespace {ns!r} changed while being replaced: try again")
    if e.status == 409:
        return Conflict(f"{what} exists already in namespace {ns!r}: {message}")
    if e.status in (400, 422):
        return InvalidInput(f"the cluster refused {what}: {message}")
    return Unavailable(f"the Kubernetes API server answered {e.status} to {verb} {what}: {message}")
