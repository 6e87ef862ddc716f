"""KubeRay: every shipped or rendered manifest validates against KubeRay's CRD schemas (and the
Kubernetes models), a RayService's serveConfigV2 against Ray Serve's schema, and the client's
apply/status/delete against a stand-in API server that checks request paths and bodies.
No cluster, Ray or Kafka is started."""

from __future__ import annotations

import copy
import json
import urllib.error
import urllib.request
from pathlib import Path
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import yaml
from click.testing import CliRunner

from kafkaml_ray.cli.k8s import k8s
from kafkaml_ray.errors import Conflict, InvalidInput, NotFound, Unavailable
from kafkaml_ray.kuberay import (
    ClusterSpec,
    KubeRayClient,
    ObjectStatus,
    from_deployment,
    from_inference,
    render_raycluster,
    render_rayjob,
    render_rayservice,
    serve_config,
    to_yaml,
)
from kafkaml_ray.kuberay.api import APPLY_TRIES
from kafkaml_ray.store import (
    Configuration,
    Inference,
    MLModel,
    Store,
    TrainingDeployment,
    TrainingResult,
)
from tests.kuberay.apiserver import (
    APPLY,
    JSON_PATCH,
    FakeApiServer,
    status_body,
    validate_any,
    validate_crd,
)

ROOT = Path(__file__).resolve().parent.parent.parent


# -- schema validation ---------------------------------------------------------------------
def shipped() -> list[Path]:
    return sorted((ROOT / "kuberay").rglob("*.yaml"))


# -- shipped manifests ---------------------------------------------------------------------
@pytest.mark.parametrize("path", shipped(), ids=lambda p: str(p.relative_to(ROOT)))
def test_shipped_manifests_are_valid(path: Path):
    docs = [d for d in yaml.safe_load_all(path.read_text()) if d is not None]
    assert docs
    for doc in docs:
        validate_any(doc)


def test_shipped_set_is_complete():
    kinds = set()
    for path in shipped():
        kinds |= {(d["apiVersion"], d["kind"]) for d in yaml.safe_load_all(path.read_text())}
    assert {
        ("ray.io/v1", "RayCluster"),
        ("ray.io/v1", "RayJob"),
        ("ray.io/v1", "RayService"),
        ("kafka.strimzi.io/v1", "Kafka"),
        ("kafka.strimzi.io/v1", "KafkaNodePool"),
        ("apps/v1", "StatefulSet"),
        ("v1", "PersistentVolumeClaim"),
    } <= kinds
    assert (ROOT / "Dockerfile").is_file() and (ROOT / "docs" / "kubernetes.md").is_file()


def test_kafka_is_kraft_through_node_pools():
    docs = {d["kind"]: d for d in yaml.safe_load_all((ROOT / "kuberay/kafka.yaml").read_text())}
    pool, kafka = docs["KafkaNodePool"], docs["Kafka"]
    assert pool["metadata"]["labels"]["strimzi.io/cluster"] == kafka["metadata"]["name"]
    assert set(pool["spec"]["roles"]) == {"controller", "broker"}
    assert "zookeeper" not in kafka["spec"]
    assert any(v.get("kraftMetadata") == "shared" for v in pool["spec"]["storage"]["volumes"])


@pytest.mark.parametrize(
    ("path", "rendered"),
    [
        ("raycluster.yaml", lambda: render_raycluster()),
        ("templates/rayjob-training.yaml", lambda: render_rayjob(1, gpu=True)),
        (
            "templates/rayservice-inference.yaml",
            lambda: render_rayservice(
                1, replicas=1, min_replicas=1, max_replicas=4, gpu_fraction=0.25, batch_size=64
            ),
        ),
    ],
)
def test_shipped_files_match_the_renderer(path, rendered):
    assert yaml.safe_load((ROOT / "kuberay" / path).read_text()) == rendered(), (
        f"kuberay/{path} is out of date: regenerate it (kuberay/README.md)"
    )


# -- rendered manifests --------------------------------------------------------------------
RENDERED = {
    "cluster": lambda: render_raycluster(),
    "cluster-cpu-only": lambda: render_raycluster(
        "small", ClusterSpec(gpu_max_workers=0, artifacts_claim=None, cpu_min_workers=0)
    ),
    "rayjob": lambda: render_rayjob(7),
    "rayjob-gpu": lambda: render_rayjob(7, gpu=True, cluster=ClusterSpec(gpu_max_workers=0)),
    "rayjob-on-cluster": lambda: render_rayjob(7, cluster_name="kafkaml"),
    "rayservice": lambda: render_rayservice(3),
    "rayservice-replicas": lambda: render_rayservice(3, replicas=3, batch_size=8),
    "rayservice-gpu-autoscaling": lambda: render_rayservice(
        3, replicas=2, min_replicas=1, max_replicas=10, gpu_fraction=0.25
    ),
    "rayservice-2-gpus": lambda: render_rayservice(
        3, gpu_fraction=2, cluster=ClusterSpec(gpus_per_worker=4)
    ),
}


@pytest.mark.parametrize("name", list(RENDERED))
def test_rendered_manifests_are_valid_yaml_and_crd(name):
    obj = RENDERED[name]()
    text = to_yaml(obj)
    assert yaml.safe_load(text) == obj  # what --dry-run prints is the object
    validate_any(obj)


def test_validation_catches_typos():
    rc = render_raycluster()
    rc["spec"]["workerGroupSpecs"][0]["maxReplica"] = 3
    with pytest.raises(AssertionError, match="maxReplica"):
        validate_crd(rc)
    rc = render_raycluster()
    rc["spec"]["headGroupSpec"]["template"]["spec"]["containers"][0]["resources"]["limits"][
        "cpu"
    ] = "two"
    with pytest.raises(AssertionError, match="does not match"):
        validate_crd(rc)
    (_, sts) = yaml.safe_load_all((ROOT / "kuberay/postgres.yaml").read_text())
    sts["spec"]["template"]["spec"]["containers"][0]["envs"] = []
    with pytest.raises(AssertionError, match="envs"):
        validate_any(sts)


def test_two_manifests_make_one_stream():
    docs = list(yaml.safe_load_all(to_yaml([render_raycluster(), render_rayjob(1)])))
    assert [d["kind"] for d in docs] == ["RayCluster", "RayJob"]


def _groups(spec: dict) -> dict[str, dict]:
    return {g["groupName"]: g for g in spec["workerGroupSpecs"]}


def test_raycluster_shape():
    spec = render_raycluster()["spec"]
    assert spec["enableInTreeAutoscaling"] is True
    assert spec["rayVersion"] == "2.60.0"
    assert spec["authOptions"] == {"mode": "token", "secretName": "kafkaml-ray-auth"}
    groups = _groups(spec)
    assert set(groups) == {"cpu", "gpu"}
    gpu = groups["gpu"]["template"]["spec"]["containers"][0]
    assert gpu["resources"]["limits"]["nvidia.com/gpu"] == 1
    assert gpu["image"] == "kafkaml-ray:0.1.0-gpu"
    assert "nvidia.com/gpu" not in groups["cpu"]["template"]["spec"]["containers"][0]["resources"]
    head = spec["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["envFrom"] == [{"secretRef": {"name": "kafkaml-ray-env"}}]
    # No setting, and so no secret, is written into a manifest: only Ray's own knob for how
    # long a node keeps idle worker processes warm, on every Ray container.
    idle = [{"name": "RAY_idle_worker_killing_time_threshold_ms", "value": "60000"}]
    assert head["env"] == idle
    assert all(g["template"]["spec"]["containers"][0]["env"] == idle for g in groups.values())
    assert (
        render_raycluster("x", ClusterSpec(worker_idle_s=5))["spec"]["headGroupSpec"]["template"][
            "spec"
        ]["containers"][0]["env"][0]["value"]
        == "5000"
    )
    assert {"name": "artifacts", "mountPath": "/artifacts"} in head["volumeMounts"]
    small = render_raycluster("small", ClusterSpec(gpu_max_workers=0, artifacts_claim=None))
    assert set(_groups(small["spec"])) == {"cpu"}
    assert "artifacts" not in json.dumps(small)


def test_rayjob_runs_the_training_entrypoint():
    from kafkaml_ray.train.submit import entrypoint

    job = render_rayjob(5)
    assert job["spec"]["entrypoint"] == "python -m kafkaml_ray.train --deployment 5"
    assert job["spec"]["entrypoint"] == entrypoint(5)
    assert job["metadata"]["name"] == job["spec"]["jobId"] == "kafkaml-training-5"
    assert job["spec"]["shutdownAfterJobFinishes"] is True
    assert set(_groups(job["spec"]["rayClusterSpec"])) == {"cpu"}
    assert set(_groups(render_rayjob(5, gpu=True)["spec"]["rayClusterSpec"])) == {"cpu", "gpu"}
    shared = render_rayjob(5, cluster_name="kafkaml")["spec"]
    assert "rayClusterSpec" not in shared and "shutdownAfterJobFinishes" not in shared


def test_from_rows():
    dep = TrainingDeployment(id=4, configuration_id=1, batch_size=8, kwargs={}, gpu_fraction=0.5)
    assert "gpu" in _groups(from_deployment(dep)["spec"]["rayClusterSpec"])
    inf = Inference(
        id=9,
        result_id=1,
        input_topic="in",
        output_topic="out",
        replicas=2,
        min_replicas=None,
        max_replicas=None,
        gpu_fraction=0.0,
        batch_size=16,
        max_wait_ms=5.0,
    )
    svc = from_inference(inf)
    assert svc["metadata"]["name"] == "kafkaml-inference-9"
    app = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]
    assert [d["num_replicas"] for d in app["deployments"]] == [2, 2]
    assert app["deployments"][1]["max_ongoing_requests"] == 32
    assert "num_gpus" not in app["deployments"][1]["ray_actor_options"]
    assert "gpu" not in _groups(svc["spec"]["rayClusterConfig"])


# -- serveConfigV2 against Ray Serve's own schema --------------------------------------------
def _known_fields(data: dict, model) -> None:
    """Ray Serve's schema ignores unknown keys: make sure ours are all real options."""
    assert set(data) <= set(model.model_fields), set(data) - set(model.model_fields)


@pytest.mark.parametrize("name", [n for n in RENDERED if n.startswith("rayservice")])
def test_serve_config_is_accepted_by_ray_serve(name):
    from ray.serve.schema import DeploymentSchema, ServeApplicationSchema, ServeDeploySchema

    text = RENDERED[name]()["spec"]["serveConfigV2"]
    raw = yaml.safe_load(text)
    parsed = ServeDeploySchema.model_validate(raw)
    _known_fields(raw, ServeDeploySchema)
    (app,) = parsed.applications
    _known_fields(raw["applications"][0], ServeApplicationSchema)
    for d in raw["applications"][0]["deployments"]:
        _known_fields(d, DeploymentSchema)
    assert app.name == "inference-3"
    assert app.import_path == "kafkaml_ray.serve.app:build_app"
    assert app.args == {"inference_id": 3}
    assert [d.name for d in app.deployments] == ["KafkaIngress", "Predictor"]


def test_serve_config_fractional_gpus_and_autoscaling():
    from ray.serve.schema import ServeDeploySchema

    cfg = serve_config(3, replicas=2, min_replicas=1, max_replicas=10, gpu_fraction=0.25)
    ingress, predictor = ServeDeploySchema.model_validate(cfg).applications[0].deployments
    assert predictor.ray_actor_options.num_gpus == 0.25
    assert not ingress.ray_actor_options.num_gpus
    for d in (ingress, predictor):
        assert d.autoscaling_config["min_replicas"] == 1
        assert d.autoscaling_config["max_replicas"] == 10
        assert d.autoscaling_config["initial_replicas"] == 2
    svc = render_rayservice(3, replicas=2, min_replicas=1, max_replicas=10, gpu_fraction=0.25)
    gpu = _groups(svc["spec"]["rayClusterConfig"])["gpu"]
    assert gpu["maxReplicas"] == 3  # ten quarter-GPU predictors need three GPUs
    # One bound alone is refused, as the API refuses it (the two used to disagree).
    with pytest.raises(InvalidInput, match="both min_replicas and max_replicas"):
        serve_config(1, replicas=3, max_replicas=5)
    bounded = serve_config(1, replicas=3, min_replicas=1, max_replicas=5)
    scaling = bounded["applications"][0]["deployments"][0]["autoscaling_config"]
    assert {k: scaling[k] for k in ("min_replicas", "max_replicas", "initial_replicas")} == {
        "min_replicas": 1,
        "max_replicas": 5,
        "initial_replicas": 3,
    }
    # the ingress scales on consumer lag there too, as it does on local Serve
    assert scaling["policy"]["policy_function"] == "kafkaml_ray.serve.autoscale:LagPolicy"


@pytest.mark.parametrize(
    ("kwargs", "words"),
    [
        ({"replicas": 0}, "replicas"),
        ({"min_replicas": 0, "max_replicas": 2}, "min_replicas"),
        ({"min_replicas": 3, "max_replicas": 2}, "above max_replicas"),
        ({"gpu_fraction": -0.5}, "gpu_fraction"),
        ({"gpu_fraction": 1.5}, "whole number"),
        ({"gpu_fraction": 2.0}, "more than a GPU worker has"),
        ({"batch_size": 0}, "batch_size"),
    ],
)
def test_bad_serving_settings_are_refused(kwargs, words):
    with pytest.raises(InvalidInput, match=words) as e:
        render_rayservice(1, **kwargs)
    assert "\n" not in str(e.value)


def test_bad_ids_and_specs_are_refused():
    with pytest.raises(InvalidInput, match="deployment id"):
        render_rayjob(0)
    with pytest.raises(InvalidInput, match="inference_id"):
        render_rayservice(-1)
    with pytest.raises(ValueError, match="cpu_min_workers"):
        ClusterSpec(cpu_min_workers=5, cpu_max_workers=1)


# -- a stand-in Kubernetes API server --------------------------------------------------------


@pytest.fixture
def api():
    server = FakeApiServer()
    yield server
    server.close()


@pytest.fixture
def client(api) -> KubeRayClient:
    return KubeRayClient(host=api.url, token=api.token, namespace="kafkaml")


BASE = "/apis/ray.io/v1/namespaces/kafkaml"
SSA_QUERY = {"fieldManager": ["kafkaml-ray"], "force": ["true"]}


def _split(path: str) -> tuple[str, dict[str, list[str]]]:
    url = urlsplit(path)
    return url.path, parse_qs(url.query)


def _send(api, method, path, body, content_type, agent="test/1.0", **query):
    """A request from another client than ours (Ray's autoscaler, kubectl)."""
    url = f"{api.url}{BASE}/{path}" + (f"?{urlencode(query)}" if query else "")
    req = urllib.request.Request(
        url,
        data=json.dumps(body).encode(),
        method=method,
        headers={
            "Authorization": f"Bearer {api.token}",
            "Content-Type": content_type,
            "User-Agent": agent,
        },
    )
    try:
        with urllib.request.urlopen(req) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _autoscale(api, ops):
    """What Ray's autoscaler sends to scale the RayCluster ``kafkaml``: a JSON patch,
    from a client that names no field manager (the User-Agent does)."""
    code, out = _send(api, "PATCH", "rayclusters/kafkaml", ops, JSON_PATCH, "ray-autoscaler/2.60")
    assert code == 200, out
    return out


def _replicas(obj: dict) -> dict[str, int]:
    return {g["groupName"]: g["replicas"] for g in obj["spec"]["workerGroupSpecs"]}


def test_apply_is_a_server_side_apply(api, client):
    svc = render_rayservice(3, gpu_fraction=0.25)
    obj = client.apply(svc)
    assert obj["metadata"]["namespace"] == "kafkaml"
    assert obj["metadata"]["resourceVersion"] == "1"
    (req,) = api.requests  # one request creates it
    assert req[0] == "PATCH"
    assert _split(req[1]) == (f"{BASE}/rayservices/kafkaml-inference-3", SSA_QUERY)
    assert api.content_types == ["application/apply-patch+yaml"]
    assert req[2] == svc
    owned = api.managers[("kafkaml", "rayservices", "kafkaml-inference-3")]
    assert set(owned) == {"kafkaml-ray"}
    assert ("spec", "serveConfigV2") in owned["kafkaml-ray"]


def test_apply_updates_an_existing_object(api, client):
    client.apply(render_rayservice(3))
    # someone annotates it (kubectl annotate): a field that our manifest does not set
    note = [{"op": "add", "path": "/metadata/annotations", "value": {"team": "ml"}}]
    code, _ = _send(api, "PATCH", "rayservices/kafkaml-inference-3", note, JSON_PATCH, "kubectl")
    assert code == 200
    changed = render_rayservice(3, replicas=4)
    obj = client.apply(changed)
    verbs = [(v, _split(p)) for v, p, _ in api.requests]
    name = f"{BASE}/rayservices/kafkaml-inference-3"
    assert verbs == [
        ("PATCH", (name, SSA_QUERY)),
        ("PATCH", (name, {})),  # the annotation
        ("PATCH", (name, SSA_QUERY)),
    ]
    assert api.content_types == [APPLY, JSON_PATCH, APPLY]
    sent = api.requests[-1][2]
    assert sent == changed and "resourceVersion" not in sent["metadata"]
    assert obj["metadata"]["resourceVersion"] == "3"
    stored = api.objects[("kafkaml", "rayservices", "kafkaml-inference-3")]
    assert "num_replicas: 4" in stored["spec"]["serveConfigV2"]
    assert stored["metadata"]["annotations"] == {"team": "ml"}  # a replace would drop it


def test_apply_keeps_the_autoscalers_worker_counts(api, client):
    """A RayCluster scaled by Ray's autoscaler keeps its worker counts when it is applied
    again, though the manifest says ``replicas: <min>``; create-then-replace (PUT) and a plain
    server-side apply of the manifest would both scale it back down."""
    client.apply(render_raycluster(cluster=ClusterSpec(gpu_max_workers=0)))
    assert _replicas(api.objects[("kafkaml", "rayclusters", "kafkaml")]) == {"cpu": 1}
    _autoscale(
        api,
        [
            {"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3},
            {"op": "add", "path": "/spec/workerGroupSpecs/0/scaleStrategy", "value": {}},
        ],
    )
    key = ("kafkaml", "rayclusters", "kafkaml")
    # the worker groups are one atomic list: the autoscaler owns all of it now
    assert ("spec", "workerGroupSpecs") in api.managers[key]["ray-autoscaler"]
    api.requests.clear()
    api.content_types.clear()

    changed = render_raycluster(cluster=ClusterSpec(cpu_max_workers=6))  # adds the GPU group
    assert _replicas(changed) == {"cpu": 1, "gpu": 0}
    obj = client.apply(changed)
    assert _replicas(obj) == {"cpu": 3, "gpu": 0}  # the new group starts at its minimum
    assert _replicas(api.objects[key]) == {"cpu": 3, "gpu": 0}
    assert [g["maxReplicas"] for g in obj["spec"]["workerGroupSpecs"]] == [6, 2]
    (get, patch) = api.requests
    assert get[:2] == ("GET", f"{BASE}/rayclusters/kafkaml")
    assert patch[0] == "PATCH"
    assert _split(patch[1]) == (f"{BASE}/rayclusters/kafkaml", SSA_QUERY)
    assert api.content_types[1] == APPLY
    assert patch[2]["metadata"]["resourceVersion"] == "2"  # as read
    assert _replicas(patch[2]) == {"cpu": 3, "gpu": 0}
    assert patch[2]["spec"]["workerGroupSpecs"][0]["scaleStrategy"] == {}
    assert ("spec", "workerGroupSpecs") in api.managers[key]["kafkaml-ray"]
    assert "ray-autoscaler" not in api.managers[key]

    # the autoscaler scales on; a lower maximum holds the count to it
    _autoscale(api, [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 5}])
    obj = client.apply(render_raycluster(cluster=ClusterSpec(cpu_max_workers=4)))
    assert _replicas(obj) == {"cpu": 4, "gpu": 0}


def test_the_worker_groups_are_an_atomic_list(api, client):
    """Why `apply` carries the autoscaler's counts over: applying the worker groups as
    rendered, with or without ``replicas``, would reset them (to the manifest's count, or to
    the CRD default 0), and without force it fails on the autoscaler's fields."""
    client.apply(render_raycluster())
    _autoscale(api, [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3}])
    path = "rayclusters/kafkaml"
    rendered = render_raycluster()
    code, out = _send(api, "PATCH", path, rendered, APPLY, fieldManager="kafkaml-ray")
    assert code == 409 and out["reason"] == "Conflict"
    assert out["message"] == (
        'Apply failed with 1 conflict(s): conflict with "ray-autoscaler": .spec.workerGroupSpecs'
    )
    query = {"fieldManager": "kafkaml-ray", "force": "true"}
    without = copy.deepcopy(rendered)
    for group in without["spec"]["workerGroupSpecs"]:
        del group["replicas"]
    code, out = _send(api, "PATCH", path, without, APPLY, **query)
    assert code == 200 and _replicas(out) == {"cpu": 0, "gpu": 0}
    _autoscale(api, [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 3}])
    code, out = _send(api, "PATCH", path, rendered, APPLY, **query)
    assert code == 200 and _replicas(out) == {"cpu": 1, "gpu": 0}
    # and what the stand-in refuses
    code, out = _send(api, "PATCH", path, rendered, APPLY)
    assert code == 400 and "require fieldManager" in out["message"]
    ops = [{"op": "replace", "path": "/spec/workerGroupSpecs/0/replicas", "value": 2}]
    assert _send(api, "PATCH", path, ops, JSON_PATCH, force="true")[0] == 400
    assert _send(api, "PATCH", path, rendered, "application/json", **query)[0] == 415


def test_apply_reports_a_concurrent_change(api, client):
    client.apply(render_raycluster())
    api.requests.clear()
    api.race = True  # the RayCluster changes after every read
    with pytest.raises(Conflict, match="'kafkaml' in namespace 'kafkaml' changed while"):
        client.apply(render_raycluster(cluster=ClusterSpec(cpu_max_workers=6)))
    assert [v for v, _, _ in api.requests] == ["GET", "PATCH"] * APPLY_TRIES  # read, applied
    stored = api.objects[("kafkaml", "rayclusters", "kafkaml")]
    assert stored["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 4  # unchanged
    api.race = 1  # once: the second try goes through
    obj = client.apply(render_raycluster(cluster=ClusterSpec(cpu_max_workers=6)))
    assert obj["spec"]["workerGroupSpecs"][0]["maxReplicas"] == 6


def test_api_errors_of_an_apply():
    from kubernetes.client.exceptions import ApiException

    from kafkaml_ray.kuberay.api import api_error

    def refusal(code, reason, message):
        e = ApiException(status=code, reason=reason)
        e.body = json.dumps(status_body(code, reason, message, "kafkaml"))
        return api_error(e, "apply", "rayclusters", "kafkaml", "kafkaml")

    e = refusal(409, "Conflict", 'Apply failed with 1 conflict: conflict with "x": .spec.suspend')
    assert isinstance(e, Conflict)
    assert str(e) == (
        "raycluster 'kafkaml' in namespace 'kafkaml': Apply failed with 1 conflict: "
        'conflict with "x": .spec.suspend'
    )
    e = refusal(409, "Conflict", "the object has been modified")
    assert str(e) == (
        "raycluster 'kafkaml' in namespace 'kafkaml' changed while being applied: try again"
    )
    e = refusal(415, "UnsupportedMediaType", "the body of the request was in an unknown format")
    assert isinstance(e, Unavailable) and "server-side apply" in str(e)


def test_status_and_delete(api, client):
    client.apply(render_raycluster())
    client.apply(render_rayjob(5))
    client.apply(render_rayservice(3))
    api.objects[("kafkaml", "rayservices", "kafkaml-inference-3")]["status"] = {
        "conditions": [{"type": "Ready", "status": "True", "message": "serving"}]
    }
    api.objects[("kafkaml", "rayjobs", "kafkaml-training-5")]["status"] = {
        "jobDeploymentStatus": "Running",
        "jobStatus": "RUNNING",
    }
    assert client.status("RayService", "kafkaml-inference-3") == [
        ObjectStatus("RayService", "kafkaml-inference-3", "kafkaml", "ready", "serving")
    ]
    every = {(o.kind, o.name, o.state) for o in client.status()}
    assert every == {
        ("RayCluster", "kafkaml", "pending"),
        ("RayJob", "kafkaml-training-5", "RUNNING"),
        ("RayService", "kafkaml-inference-3", "ready"),
    }
    lists = [p for v, p, _ in api.requests if v == "GET" and "labelSelector" in p]
    assert len(lists) == 3
    assert all(
        parse_qs(urlsplit(p).query)["labelSelector"] == ["app.kubernetes.io/part-of=kafkaml-ray"]
        for p in lists
    )

    client.delete("RayJob", "kafkaml-training-5")
    assert api.requests[-1][:2] == (
        "DELETE",
        "/apis/ray.io/v1/namespaces/kafkaml/rayjobs/kafkaml-training-5",
    )
    with pytest.raises(NotFound, match="rayjob 'kafkaml-training-5' not found in namespace"):
        client.delete("RayJob", "kafkaml-training-5")
    with pytest.raises(NotFound, match="not found"):
        client.status("RayJob", "kafkaml-training-5")


def test_crds_missing(api, client):
    api.mode = "no-crd"
    for call in (
        lambda: client.apply(render_rayservice(3)),
        lambda: client.status("RayService", "kafkaml-inference-3"),
        lambda: client.delete("RayService", "kafkaml-inference-3"),
    ):
        with pytest.raises(Unavailable) as e:
            call()
        assert str(e.value) == (
            "the KubeRay CRDs are not installed in this cluster (404 on ray.io/v1 rayservices):"
            " install the KubeRay operator first"
        )


def test_forbidden(api, client):
    api.mode = "forbidden"
    with pytest.raises(Unavailable, match=r"forbidden \(403\) to apply ray.io rayjobs") as e:
        client.apply(render_rayjob(5))
    assert "needs the RBAC verbs patch, and create" in str(e.value)
    assert 'cannot patch resource "rayjobs"' in str(e.value)
    assert "\n" not in str(e.value)


def test_wrong_token_namespace_and_unreachable_server(api):
    with pytest.raises(Unavailable, match="401"):
        KubeRayClient(host=api.url, token="wrong").status()
    with pytest.raises(NotFound, match="namespace 'nope' does not exist"):
        KubeRayClient(host=api.url, token=api.token, namespace="nope").apply(render_rayjob(1))
    url = api.url
    api.close()
    with pytest.raises(Unavailable, match="cannot reach the Kubernetes API server"):
        KubeRayClient(host=url, token=api.token).status()
    with pytest.raises(InvalidInput, match="token"):
        KubeRayClient(host=url)


def test_invalid_object_is_refused_by_the_server(client):
    bad = render_rayjob(5)
    bad["spec"]["backoffLimit"] = "many"
    with pytest.raises(InvalidInput, match="the cluster refused rayjob 'kafkaml-training-5'"):
        client.apply(bad)
    with pytest.raises(InvalidInput, match="not a KubeRay kind"):
        client.apply({"kind": "Pod", "metadata": {"name": "x"}})


def _kubeconfig(tmp_path: Path, api: FakeApiServer, namespace: str = "kafkaml") -> Path:
    path = tmp_path / "kubeconfig"
    path.write_text(
        yaml.safe_dump(
            {
                "apiVersion": "v1",
                "kind": "Config",
                "clusters": [{"name": "stand-in", "cluster": {"server": api.url}}],
                "users": [{"name": "ci", "user": {"token": api.token}}],
                "contexts": [
                    {
                        "name": "ci",
                        "context": {"cluster": "stand-in", "user": "ci", "namespace": namespace},
                    }
                ],
                "current-context": "ci",
            }
        )
    )
    return path


def test_kubeconfig_and_its_namespace(api, tmp_path):
    client = KubeRayClient(kubeconfig=str(_kubeconfig(tmp_path, api)))
    assert client.namespace == "kafkaml"
    client.apply(render_raycluster())
    assert _split(api.requests[-1][1])[0] == f"{BASE}/rayclusters/kafkaml"
    with pytest.raises(Unavailable, match="no usable kubeconfig"):
        KubeRayClient(kubeconfig=str(tmp_path / "missing"))


# -- CLI -------------------------------------------------------------------------------------
@pytest.fixture
def store_env(tmp_path):
    """A store holding training deployment 1 (GPU) and inference 1 (quarter GPUs)."""
    url = f"sqlite:///{tmp_path / 'kafkaml.db'}"
    store = Store(url)
    with store.session() as s:
        model = MLModel(name="m", framework="pytorch", code="...")
        conf = Configuration(name="c", models=[model])
        dep = TrainingDeployment(configuration=conf, batch_size=8, gpu_fraction=0.5)
        result = TrainingResult(deployment=dep, model=model)
        s.add_all([model, conf, dep, result])
        s.flush()
        s.add(
            Inference(
                result_id=result.id,
                input_topic="in",
                output_topic="out",
                replicas=2,
                min_replicas=1,
                max_replicas=4,
                gpu_fraction=0.25,
                batch_size=32,
            )
        )
    store.dispose()
    return {"KAFKAML_DB": url, "KAFKAML_HOME": str(tmp_path)}


def _run(args, env=None):
    return CliRunner().invoke(k8s, args, env=env, catch_exceptions=False)


def test_cli_render(store_env):
    out = _run(["render", "cluster"])
    assert out.exit_code == 0 and yaml.safe_load(out.output) == render_raycluster()
    out = _run(["render", "training", "1"], store_env)
    assert out.exit_code == 0, out.output
    job = yaml.safe_load(out.output)
    validate_crd(job)
    assert "gpu" in _groups(job["spec"]["rayClusterSpec"])
    out = _run(["render", "inference", "1", "--image", "reg.example/kml:1"], store_env)
    svc = yaml.safe_load(out.output)
    validate_crd(svc)
    head = svc["spec"]["rayClusterConfig"]["headGroupSpec"]["template"]["spec"]["containers"][0]
    assert head["image"] == "reg.example/kml:1"
    app = yaml.safe_load(svc["spec"]["serveConfigV2"])["applications"][0]
    assert app["deployments"][1]["ray_actor_options"]["num_gpus"] == 0.25
    out = _run(["render", "training", "1", "--on-cluster", "kafkaml"], store_env)
    assert yaml.safe_load(out.output)["spec"]["clusterSelector"] == {"ray.io/cluster": "kafkaml"}
    out = _run(["render", "cluster", "--artifacts-claim", ""])
    assert "persistentVolumeClaim" not in out.output


def test_cli_errors_are_one_line(store_env):
    out = _run(["render", "inference", "99"], store_env)
    assert out.exit_code == 1 and out.output == "error: no inference 99\n"
    out = _run(["render", "training"], store_env)
    assert out.exit_code == 2 and "'training' needs an id" in out.output
    out = _run(["render", "training", "x"], store_env)
    assert out.exit_code == 2 and "numeric id" in out.output


def test_cli_apply_dry_run_sends_nothing(api, store_env):
    env = {**store_env, "KAFKAML_K8S_HOST": api.url, "KAFKAML_K8S_TOKEN": api.token}
    out = _run(["apply", "inference", "1", "--dry-run"], env)
    assert out.exit_code == 0
    assert yaml.safe_load(out.output)["kind"] == "RayService"
    assert api.requests == []


def test_cli_apply_status_delete(api, store_env):
    env = {**store_env, "KAFKAML_K8S_HOST": api.url, "KAFKAML_K8S_TOKEN": api.token}
    out = _run(["apply", "inference", "1", "-n", "kafkaml"], env)
    assert out.output == "applied RayService kafkaml/kafkaml-inference-1\n"
    out = _run(["apply", "training", "1", "-n", "kafkaml"], env)
    assert out.output == "applied RayJob kafkaml/kafkaml-training-1\n"
    with Store(store_env["KAFKAML_DB"]).session() as s:
        assert s.get(TrainingDeployment, 1).job_id == "kafkaml-training-1"  # listener leaves it
    out = _run(["apply", "training", "1", "-n", "kafkaml"], env)  # again: applied over it
    assert out.exit_code == 0
    out = _run(["status", "-n", "kafkaml", "--json"], env)
    assert {o["name"] for o in json.loads(out.output)} == {
        "kafkaml-inference-1",
        "kafkaml-training-1",
    }
    out = _run(["status", "inference", "1", "-n", "kafkaml"], env)
    assert out.output == "RayService/kafkaml-inference-1: pending\n"
    out = _run(["delete", "inference", "1", "-n", "kafkaml"], env)
    assert out.output == "deleted RayService kafkaml/kafkaml-inference-1\n"
    out = _run(["delete", "inference", "1", "-n", "kafkaml"], env)
    assert out.exit_code == 1
    assert out.output == (
        "error: rayservice 'kafkaml-inference-1' not found in namespace 'kafkaml'\n"
    )


def test_cli_refuses_a_deployment_submitted_elsewhere(api, store_env):
    with Store(store_env["KAFKAML_DB"]).session() as s:
        s.get(TrainingDeployment, 1).job_id = "kafkaml-training-1-abc123"
    args = ["apply", "training", "1", "--host", api.url, "--token", api.token]
    out = _run(args, store_env)
    assert out.exit_code == 1
    assert "submitted already as Ray job kafkaml-training-1-abc123" in out.output
    assert api.requests == []


def test_cli_reports_missing_crds(api, store_env):
    api.mode = "no-crd"
    out = _run(["status", "--host", api.url, "--token", api.token], store_env)
    assert out.exit_code == 1
    assert out.output.startswith("error: the KubeRay CRDs are not installed in this cluster")
    assert out.output.count("\n") == 1


def _plain(value):
    """A Serve option as plain data, whichever form the schema kept it in."""
    from ray.serve.config import AutoscalingConfig

    if isinstance(value, dict) and "min_replicas" in value:
        value = AutoscalingConfig(**value)
    return value.model_dump() if hasattr(value, "model_dump") else value


@pytest.mark.parametrize(
    "scaling",
    [
        {"replicas": 2, "min_replicas": None, "max_replicas": None, "gpu_fraction": 0.0},
        {"replicas": 2, "min_replicas": 1, "max_replicas": 6, "gpu_fraction": 0.0},
        {"replicas": 1, "min_replicas": 1, "max_replicas": 4, "gpu_fraction": 0.25},
    ],
)
def test_the_rayservice_runs_the_application_that_local_serve_runs(scaling):
    """Parity: the serveConfigV2 of an inference and the application `start_inference` runs
    on local Serve, both read through Serve's own schemas, describe the same deployments."""
    from types import SimpleNamespace

    from ray.serve._private.build_app import build_app
    from ray.serve.deployment import deployment_to_schema
    from ray.serve.schema import ServeApplicationSchema, ServeDeploySchema

    from kafkaml_ray.frameworks import TrainedModel
    from kafkaml_ray.serve.app import app_for
    from kafkaml_ray.serve.options import (
        SERVE_IMPORT_PATH,
        app_name,
        deployment_options,
        route_prefix,
    )
    from kafkaml_ray.serve.spec import InferenceSpec
    from kafkaml_ray.settings import Settings

    row = SimpleNamespace(id=7, batch_size=64, **scaling)
    # What start_inference hands to serve.run for this row:
    ingress, predictor = deployment_options(row)
    spec = InferenceSpec(
        inference_id=7, result_id=1, trained=TrainedModel("pytorch", "", "", None, None, ""),
        input_topic="in", output_topic="out", input_format="RAW",
        input_config={}, settings=Settings(), batch_size=64,
    )  # fmt: skip
    built = build_app(app_for(spec, ingress, predictor), name=app_name(7))
    local = ServeApplicationSchema(
        name=app_name(7),
        route_prefix=route_prefix(7),
        import_path=SERVE_IMPORT_PATH,
        args={"inference_id": 7},
        deployments=[deployment_to_schema(d) for d in built.deployments],
    )
    cfg = serve_config(7, batch_size=64, **scaling)
    (k8s,) = ServeDeploySchema.model_validate(cfg).applications
    assert (k8s.name, k8s.route_prefix, k8s.import_path, k8s.args) == (
        local.name,
        local.route_prefix,
        local.import_path,
        local.args,
    )
    ours = {d.name: d for d in local.deployments}
    assert sorted(ours) == sorted(d.name for d in k8s.deployments) == ["KafkaIngress", "Predictor"]
    for theirs in k8s.deployments:
        mine = ours[theirs.name]
        # Every option the manifest sets is what local Serve runs with ...
        for field in theirs.model_dump(exclude_unset=True):
            if field != "name":
                assert _plain(getattr(mine, field)) == _plain(getattr(theirs, field)), field
        # ... and what decides scaling and resources is set there, not left to defaults.
        assert "ray_actor_options" in theirs.model_fields_set
        assert ("autoscaling_config" in theirs.model_fields_set) == (
            scaling["min_replicas"] is not None
        )
