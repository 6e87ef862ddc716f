"""``kafkaml-ray k8s``: render, apply, inspect and delete the KubeRay objects of kafkaml-ray.

WHAT is ``cluster`` (the long-lived RayCluster, REF = its name, default ``kafkaml``),
``training`` (a RayJob, REF = a training deployment id) or ``inference`` (a RayService,
REF = an inference id). Training deployments and inferences are read from the store
(``KAFKAML_DB``): point it at the cluster's PostgreSQL.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Callable
from dataclasses import asdict

import click

from kafkaml_ray.cli.kit import UserErrorGroup
from kafkaml_ray.errors import Conflict, NotFound
from kafkaml_ray.kuberay import (
    CLUSTER_NAME,
    ClusterSpec,
    KubeRayClient,
    from_deployment,
    from_inference,
    rayjob_name,
    rayservice_name,
    render_raycluster,
    to_yaml,
)

__all__ = ["k8s"]

_KINDS = {"cluster": "RayCluster", "training": "RayJob", "inference": "RayService"}
_WHAT = click.Choice(list(_KINDS))


@click.group(cls=UserErrorGroup)
def k8s() -> None:
    """KubeRay on Kubernetes: RayCluster, RayJob (training), RayService (inference).

    WHAT is 'cluster' [NAME], 'training' DEPLOYMENT_ID or 'inference' INFERENCE_ID.
    """


def _cluster_options(f: Callable) -> Callable:
    @click.option("--image", help="Image of the head and CPU workers [kafkaml-ray:0.1.0].")
    @click.option("--gpu-image", help="Image of the GPU workers [kafkaml-ray:0.1.0-gpu].")
    @click.option(
        "--artifacts-claim",
        help="PVC mounted at /artifacts on every Ray pod [kafkaml-artifacts]; '' for none "
        "(artifacts in an object store).",
    )
    @click.option(
        "--on-cluster",
        metavar="NAME",
        help="training: run the RayJob on this existing RayCluster instead of its own.",
    )
    @functools.wraps(f)
    def wrapper(*args, image, gpu_image, artifacts_claim, on_cluster, **kwargs):
        given = {"image": image, "gpu_image": gpu_image, "artifacts_claim": artifacts_claim}
        values = {k: v for k, v in given.items() if v is not None}
        if values.get("artifacts_claim") == "":
            values["artifacts_claim"] = None
        return f(*args, spec=ClusterSpec(**values), on_cluster=on_cluster, **kwargs)

    return wrapper


def _connection_options(f: Callable) -> Callable:
    @click.option("--kubeconfig", type=click.Path(dir_okay=False), help="A kubeconfig file.")
    @click.option("--context", help="A context of the kubeconfig.")
    @click.option(
        "--host",
        envvar="KAFKAML_K8S_HOST",
        help="API server of another cluster (with --token) [KAFKAML_K8S_HOST].",
    )
    @click.option(
        "--token",
        envvar="KAFKAML_K8S_TOKEN",
        help="Bearer token for --host; prefer the variable [KAFKAML_K8S_TOKEN].",
    )
    @click.option(
        "--ca-cert", type=click.Path(exists=True, dir_okay=False), help="CA bundle for --host."
    )
    @click.option("--insecure", is_flag=True, help="Do not verify the API server's TLS cert.")
    @click.option("-n", "--namespace", help="Namespace [the context's, else default].")
    @functools.wraps(f)
    def wrapper(*args, kubeconfig, context, host, token, ca_cert, insecure, namespace, **kw):
        def connect() -> KubeRayClient:
            return KubeRayClient(
                kubeconfig=kubeconfig,
                context=context,
                host=host,
                token=token,
                ca_cert=ca_cert,
                verify_ssl=not insecure,
                namespace=namespace,
            )

        return f(*args, connect=connect, **kw)

    return wrapper


def _ref(what: str, ref: str | None) -> str | int:
    if what == "cluster":
        return ref or CLUSTER_NAME
    if ref is None:
        raise click.UsageError(f"'{what}' needs an id")
    try:
        return int(ref)
    except ValueError:
        raise click.UsageError(f"'{what}' needs a numeric id, not {ref!r}") from None


def _name(what: str, ref: str | int) -> str:
    if what == "training":
        return rayjob_name(int(ref))
    if what == "inference":
        return rayservice_name(int(ref))
    return str(ref)


def _store():
    from kafkaml_ray.settings import Settings
    from kafkaml_ray.store import Store

    return Store.for_url(Settings.from_env().db_url)


def _render(what: str, ref: str | int, spec: ClusterSpec, on_cluster: str | None) -> dict:
    if what == "cluster":
        if on_cluster:
            raise click.UsageError("--on-cluster is for 'training'")
        return render_raycluster(str(ref), spec)
    from kafkaml_ray.store import Inference, TrainingDeployment

    table = TrainingDeployment if what == "training" else Inference
    with _store().session() as s:
        row = s.get(table, ref)
        if row is None:
            raise NotFound(f"no {'training deployment' if what == 'training' else what} {ref}")
        if what == "training":
            return from_deployment(row, cluster=spec, cluster_name=on_cluster)
        if on_cluster:
            raise click.UsageError("--on-cluster is for 'training'")
        return from_inference(row, cluster=spec)


@k8s.command("render")
@click.argument("what", type=_WHAT)
@click.argument("ref", required=False)
@_cluster_options
def render(what: str, ref: str | None, spec: ClusterSpec, on_cluster: str | None) -> None:
    """Print the manifest of WHAT as YAML (for kubectl apply -f -)."""
    click.echo(to_yaml(_render(what, _ref(what, ref), spec, on_cluster)), nl=False)


@k8s.command("apply")
@click.argument("what", type=_WHAT)
@click.argument("ref", required=False)
@click.option("--dry-run", is_flag=True, help="Print the YAML; change nothing.")
@_cluster_options
@_connection_options
def apply(what, ref, dry_run, spec, on_cluster, connect) -> None:
    """Create WHAT in the cluster, or update it when it exists already (server-side apply;
    a RayCluster keeps the worker counts its autoscaler set).

    For 'training' the Ray job id (kafkaml-training-ID) is recorded on the deployment, so
    the control listener leaves its training to the RayJob.
    """
    key = _ref(what, ref)
    manifest = _render(what, key, spec, on_cluster)
    if dry_run:
        click.echo(to_yaml(manifest), nl=False)
        return
    client = connect()
    if what == "training":
        _record_job(int(key), record=False)  # refuse before changing anything
    obj = client.apply(manifest)
    if what == "training":
        _record_job(int(key), record=True)
    meta = obj.get("metadata", {})
    click.echo(
        f"applied {manifest['kind']} {meta.get('namespace', client.namespace)}/{meta['name']}"
    )


def _record_job(deployment_id: int, record: bool) -> None:
    """Record the RayJob's Ray job id on the deployment; refuse a deployment whose
    training was submitted as another Ray job."""
    from kafkaml_ray.store import TrainingDeployment

    job_id = rayjob_name(deployment_id)
    with _store().session() as s:
        dep = s.get_one(TrainingDeployment, deployment_id)
        if dep.job_id not in (None, job_id):
            raise Conflict(
                f"training deployment {deployment_id} was submitted already as Ray job "
                f"{dep.job_id}: deploy the configuration again for a RayJob"
            )
        if record:
            dep.job_id = job_id


@k8s.command("status")
@click.argument("what", type=_WHAT, required=False)
@click.argument("ref", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print JSON for scripts.")
@_connection_options
def status(what: str | None, ref: str | None, as_json: bool, connect) -> None:
    """Status of WHAT, or of every kafkaml-ray object in the namespace."""
    kind = _KINDS[what] if what else None
    name = _name(what, _ref(what, ref)) if what and (ref or what == "cluster") else None
    found = connect().status(kind, name)
    if as_json:
        click.echo(json.dumps([asdict(o) for o in found], indent=2))
        return
    if not found:
        click.echo("(none)")
    for o in found:
        click.echo(f"{o.kind}/{o.name}: {o.state}" + (f" ({o.message})" if o.message else ""))


@k8s.command("delete")
@click.argument("what", type=_WHAT)
@click.argument("ref", required=False)
@_connection_options
def delete(what: str, ref: str | None, connect) -> None:
    """Delete WHAT (and its Ray pods) from the cluster."""
    name = _name(what, _ref(what, ref))
    client = connect()
    client.delete(_KINDS[what], name)
    click.echo(f"deleted {_KINDS[what]} {client.namespace}/{name}")
