"""Apply, inspect and delete kafkaml-ray's KubeRay objects through the Kubernetes API
(``ray.io/v1`` custom objects, with the official ``kubernetes`` client): `KubeRayClient`,
`ObjectStatus`, and the mapping of the API server's refusals onto kafkaml-ray's one-line
errors (`~kafkaml_ray.errors.NotFound`, ``Conflict``, ``InvalidInput``, ``Unavailable``).

`KubeRayClient.apply` is a Kubernetes server-side apply (field manager `FIELD_MANAGER`); on a
RayCluster that exists already it keeps the worker counts that Ray's autoscaler has set
(`_keep_scaling`). What the manifests hold is `kafkaml_ray.kuberay.render`'s business.

>>> status = ObjectStatus.of({
...     "kind": "RayService",
...     "metadata": {"name": "kafkaml-inference-3", "namespace": "kafkaml"},
...     "status": {"conditions": [{"type": "Ready", "status": "True", "message": "serving"}]},
... })
>>> status.state, status.message
('ready', 'serving')
"""

from __future__ import annotations

import copy
import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from kafkaml_ray.errors import Conflict, InvalidInput, KafkaMLError, NotFound, Unavailable
from kafkaml_ray.kuberay.render import GROUP, KINDS, PART_OF, VERSION, Kind

__all__ = ["KubeRayClient", "ObjectStatus", "FIELD_MANAGER", "api_error"]

logger = logging.getLogger(__name__)

#: The field manager of kafkaml-ray's applies: the owner of the fields it sets, as the
#: objects' ``metadata.managedFields`` say.
FIELD_MANAGER = "kafkaml-ray"
#: The content type that makes a PATCH a server-side apply.
APPLY_PATCH = "application/apply-patch+yaml"
#: How often `KubeRayClient.apply` reads and applies a RayCluster that keeps changing under it.
APPLY_TRIES = 5


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
    """Apply, inspect and delete KubeRay objects through ``CustomObjectsApi`` (``ray.io/v1``).

    Connects with a kubeconfig (``kubeconfig``/``context``; the default one, or the pod's
    service account inside a cluster), or to another cluster with ``host`` and a bearer
    ``token`` (Kafka-ML lets an inference go to another cluster). `apply` is a server-side
    apply: it creates an object, or updates the fields kafkaml-ray sets on one that exists.

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
    >>> from kafkaml_ray.kuberay import render_rayservice
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
        """Server-side apply ``manifest``: create the object, or set the fields the manifest
        sets on the one that exists. Returns the object as stored.

        This is one ``PATCH`` of the object with content type ``application/apply-patch+yaml``,
        field manager `FIELD_MANAGER` and ``force=true``. kafkaml-ray's manifest is the whole
        intent for the fields it sets, so it takes them over from any other manager (a
        ``kubectl edit``, an earlier ``kubectl apply``) instead of failing on a conflict that
        no kafkaml-ray user could resolve; fields it leaves out, other managers keep.

        A RayCluster is the exception, because Ray's autoscaler scales it in place: it sets
        ``replicas`` (and ``scaleStrategy.workersToDelete``) of the worker groups. The KubeRay
        CRDs do not mark ``workerGroupSpecs`` as a map list, so Kubernetes merges it as an
        atomic list: whoever applies it sets every worker group whole, and leaving
        ``replicas`` out would not keep the autoscaler's count but reset it to the CRD
        default (0, raised to ``minReplicas`` by the operator). So a RayCluster that exists is
        read first, and the manifest applied with the live ``replicas`` (kept within the new
        ``minReplicas``..``maxReplicas``) and ``scaleStrategy`` of each worker group that is
        there already (`_keep_scaling`), and with the live ``resourceVersion``: an apply that
        raced a change fails (409) and is read and applied again, `APPLY_TRIES` times in all,
        then `~kafkaml_ray.errors.Conflict`. A new RayCluster, and a new worker group, start
        at the manifest's ``replicas`` (``minReplicas``).

        A RayService then rolls out the new Serve config and cluster spec; a RayJob whose job
        has started keeps running as it was (delete it to run it again).
        """
        body = copy.deepcopy(dict(manifest))
        meta = body.get("metadata") or {}
        plural, ns, name = self._where(body.get("kind"), meta.get("name"))
        if not isinstance(name, str) or not name:
            raise InvalidInput(f"a {body['kind']} manifest needs a metadata.name")
        ns = meta.get("namespace") or ns
        for tries_left in reversed(range(APPLY_TRIES)):
            sent = body
            if body["kind"] == "RayCluster":
                try:
                    live = self._call("get", plural, ns, name, "get_namespaced_custom_object", name)
                except NotFound:
                    live = None
                sent = _keep_scaling(body, live)
            try:
                applied = self._call(
                    "apply",
                    plural,
                    ns,
                    name,
                    "patch_namespaced_custom_object",
                    name,
                    sent,
                    field_manager=FIELD_MANAGER,
                    force=True,
                    _content_type=APPLY_PATCH,
                    # the client reads a body from a 200 only, and an apply that creates
                    # answers 201 Created: _call reads it
                    _preload_content=False,
                )
            except Conflict:
                if sent is body or not tries_left:  # no precondition of ours, or no tries left
                    raise
                logger.info("%s %s/%s changed while applied: again", body["kind"], ns, name)
                continue
            logger.info("applied %s %s/%s", body["kind"], ns, name)
            return applied
        raise AssertionError("unreachable")

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
            out = getattr(self._api, method)(
                GROUP, VERSION, ns, plural, *args, _request_timeout=30, **kw
            )
            if kw.get("_preload_content") is False:
                out = json.loads(out.data)
            return out
        except ApiException as e:
            raise api_error(e, verb, plural, ns, name) from None
        except HTTPError as e:
            reason = str(getattr(e, "reason", None) or e).split("): ", 1)[-1]  # no pool repr
            raise Unavailable(
                f"cannot reach the Kubernetes API server at {self.host}: {_one_line(reason)}"
            ) from None


def _keep_scaling(manifest: dict[str, Any], live: Mapping[str, Any] | None) -> dict[str, Any]:
    """The RayCluster ``manifest`` to apply over ``live`` (the object as the cluster has it;
    None when there is none): each worker group that is live already keeps what Ray's
    autoscaler set, its ``replicas`` (within the manifest's ``minReplicas``..``maxReplicas``)
    and its ``scaleStrategy``; and the live ``metadata.resourceVersion`` makes the apply fail
    (409) if the object changes in between. See `KubeRayClient.apply`.

    >>> from kafkaml_ray.kuberay.render import render_raycluster
    >>> rc = render_raycluster()
    >>> live = copy.deepcopy(rc)  # the autoscaler has four CPU workers, and is removing one
    >>> live["metadata"]["resourceVersion"] = "7"
    >>> live["spec"]["workerGroupSpecs"][0].update(
    ...     replicas=3, scaleStrategy={"workersToDelete": ["kafkaml-cpu-worker-x"]})
    >>> sent = _keep_scaling(rc, live)
    >>> [(g["groupName"], g["replicas"]) for g in sent["spec"]["workerGroupSpecs"]]
    [('cpu', 3), ('gpu', 0)]
    >>> sent["spec"]["workerGroupSpecs"][0]["scaleStrategy"], sent["metadata"]["resourceVersion"]
    ({'workersToDelete': ['kafkaml-cpu-worker-x']}, '7')
    >>> rc["spec"]["workerGroupSpecs"][0]["maxReplicas"] = 2  # now at most two
    >>> _keep_scaling(rc, live)["spec"]["workerGroupSpecs"][0]["replicas"]
    2
    >>> _keep_scaling(rc, None) is rc
    True
    """
    if live is None:
        return manifest
    current = {
        g.get("groupName"): g for g in (live.get("spec") or {}).get("workerGroupSpecs") or []
    }
    out = copy.deepcopy(manifest)
    for group in out.get("spec", {}).get("workerGroupSpecs") or []:
        was = current.get(group.get("groupName"))
        if was is None:
            continue
        if isinstance(was.get("replicas"), int):
            low = group.get("minReplicas", 0)
            high = max(group.get("maxReplicas", was["replicas"]), low)
            group["replicas"] = min(max(was["replicas"], low), high)
        if "scaleStrategy" in was:
            group["scaleStrategy"] = copy.deepcopy(was["scaleStrategy"])
    out["metadata"]["resourceVersion"] = live["metadata"]["resourceVersion"]
    return out


def _one_line(text: str, limit: int = 300) -> str:
    text = " ".join(text.split())
    return text if len(text) <= limit else text[: limit - 3] + "..."


def api_error(e: Any, verb: str, plural: str, ns: str, name: str | None) -> KafkaMLError:
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
        needs = " (apply needs the RBAC verbs patch, and create for a new object)"
        return Unavailable(
            f"forbidden (403) to {verb} {GROUP} {plural} in {ns!r}"
            f"{needs if verb == 'apply' else ''}: {message}"
        )
    if e.status == 409 and verb == "apply" and message.startswith("Apply failed"):
        # only without force: fields that another field manager owns
        return Conflict(f"{what} in namespace {ns!r}: {message}")
    if e.status == 409 and verb == "apply":
        # the resourceVersion precondition: the object changed since it was read
        return Conflict(f"{what} in namespace {ns!r} changed while being applied: try again")
    if e.status == 409:
        return Conflict(f"{what} in namespace {ns!r}: {message}")
    if e.status in (400, 422):
        return InvalidInput(f"the cluster refused {what}: {message}")
    if e.status == 415:
        return Unavailable(
            f"the Kubernetes API server does not take server-side apply (415 on {what}): "
            f"it needs Kubernetes 1.22 or newer"
        )
    return Unavailable(f"the Kubernetes API server answered {e.status} to {verb} {what}: {message}")
