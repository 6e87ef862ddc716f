"""A stand-in Kubernetes API server for the KubeRay tests: ray.io/v1 custom objects checked
against KubeRay's CRD schemas (`validate_crd`) and the Kubernetes models (`validate_core`),
with create, get, list, replace, server-side apply, JSON patch and delete (`FakeApiServer`)."""

from __future__ import annotations

import copy
import functools
import json
import re
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import jsonschema
import yaml

from kafkaml_ray.kuberay import (
    KINDS,
)

CRDS = Path(__file__).resolve().parent.parent / "data" / "kuberay-crds"
YAML_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)
DNS1123 = re.compile(r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$")
APPLY = "application/apply-patch+yaml"
JSON_PATCH = "application/json-patch+json"
#: Fields that server-side apply does not give an owner.
UNOWNED = {
    ("apiVersion",),
    ("kind",),
    ("metadata", "name"),
    ("metadata", "namespace"),
    ("metadata", "resourceVersion"),
    ("metadata", "managedFields"),
    ("status",),
}


def _strict(schema: Any) -> Any:
    """The schema with unknown fields refused (``kubectl apply --validate=strict``): every
    object schema that lists its properties, and does not keep unknown fields, closes."""
    if isinstance(schema, dict):
        out = {k: _strict(v) for k, v in schema.items()}
        if (
            "properties" in out
            and "additionalProperties" not in out
            and not out.get("x-kubernetes-preserve-unknown-fields")
        ):
            out["additionalProperties"] = False
        return out
    if isinstance(schema, list):
        return [_strict(v) for v in schema]
    return schema


@functools.cache
def crd_validators() -> dict[str, jsonschema.Draft7Validator]:
    out = {}
    for path in sorted(CRDS.glob("ray.io_*.yaml")):
        crd = yaml.load(path.read_text(), Loader=YAML_LOADER)
        assert crd["spec"]["group"] == "ray.io"
        (v1,) = [v for v in crd["spec"]["versions"] if v["name"] == "v1"]
        schema = _strict(v1["schema"]["openAPIV3Schema"])
        jsonschema.Draft7Validator.check_schema(schema)
        out[crd["spec"]["names"]["kind"]] = jsonschema.Draft7Validator(schema)
    assert set(out) == set(KINDS)
    return out


def validate_crd(obj: dict[str, Any]) -> None:
    assert obj["apiVersion"] == "ray.io/v1"
    errors = sorted(crd_validators()[obj["kind"]].iter_errors(obj), key=lambda e: e.path)
    assert not errors, "\n".join(f"{list(e.path)}: {e.message}" for e in errors[:10])


def validate_core(doc: dict[str, Any]) -> None:
    """A core Kubernetes object against the kubernetes client's model of its kind (strict:
    unknown fields, wrong types and missing required fields fail)."""
    from kubernetes.client import models
    from pydantic import ValidationError

    model = getattr(models, CORE_MODELS[(doc["apiVersion"], doc["kind"])])
    try:
        model.model_validate(doc)
    except ValidationError as e:
        raise AssertionError(f"{doc['kind']} {doc['metadata']['name']}: {e}") from None


CORE_MODELS = {
    ("v1", "Service"): "V1Service",
    ("apps/v1", "StatefulSet"): "V1StatefulSet",
    ("v1", "PersistentVolumeClaim"): "V1PersistentVolumeClaim",
}


def validate_any(doc: dict[str, Any]) -> None:
    """A Kubernetes object: named as Kubernetes wants, and valid for its kind."""
    assert {"apiVersion", "kind", "metadata"} <= set(doc)
    assert DNS1123.match(doc["metadata"]["name"]) and len(doc["metadata"]["name"]) <= 63
    group = doc["apiVersion"].split("/")[0]
    if group == "ray.io":
        validate_crd(doc)
    elif group == "kafka.strimzi.io":
        assert doc["apiVersion"] == "kafka.strimzi.io/v1"
        assert doc["kind"] in ("Kafka", "KafkaNodePool")
    else:
        validate_core(doc)


def _fields(obj: dict | None, prefix: tuple = ()) -> dict[tuple, Any]:
    """The fields of an object as server-side apply tracks them on a custom object whose CRD
    has no list-type markers (KubeRay's): maps field by field, every list whole (atomic)."""
    out: dict[tuple, Any] = {}
    for key, value in (obj or {}).items():
        path = (*prefix, key)
        if path in UNOWNED:
            continue
        if isinstance(value, dict) and value:
            out.update(_fields(value, path))
        else:
            out[path] = value
    return out


def _put(obj: dict, path: tuple, value: Any) -> None:
    for key in path[:-1]:
        obj = obj.setdefault(key, {})
    obj[path[-1]] = copy.deepcopy(value)


def _drop(obj: dict, path: tuple) -> None:
    for key in path[:-1]:
        obj = obj.get(key) or {}
    obj.pop(path[-1], None)


def _defaults(schema: dict, obj: Any) -> None:
    """Fill in the defaults of a CRD schema, as the API server does on every write."""
    if isinstance(obj, dict):
        for key, sub in (schema.get("properties") or {}).items():
            if key not in obj and "default" in sub:
                obj[key] = copy.deepcopy(sub["default"])
            if key in obj:
                _defaults(sub, obj[key])
    elif isinstance(obj, list) and isinstance(schema.get("items"), dict):
        for item in obj:
            _defaults(schema["items"], item)


def _json_patch(obj: dict, ops: list[dict]) -> dict:
    """RFC 6902 ``add`` and ``replace`` (what Ray's autoscaler sends)."""
    out = copy.deepcopy(obj)
    for op in ops:
        if op.get("op") not in ("add", "replace"):
            raise ValueError(f"the stand-in takes add and replace, not {op.get('op')!r}")
        *parents, last = (
            p.replace("~1", "/").replace("~0", "~") for p in op["path"].split("/")[1:]
        )
        target: Any = out
        for p in parents:
            target = target[int(p)] if isinstance(target, list) else target[p]
        if isinstance(target, list):
            target[int(last)] = copy.deepcopy(op["value"])
        else:
            target[last] = copy.deepcopy(op["value"])
    return out


class FakeApiServer:
    """Just enough of the API server for ray.io/v1 custom objects: create, get, list
    (label selector), replace (resourceVersion), patch and delete, validating bodies against
    the CRDs and filling in the CRD defaults. ``mode`` makes it answer as a cluster without
    KubeRay ("no-crd") or with credentials lacking rights ("forbidden").

    PATCH takes two content types. ``application/apply-patch+yaml`` is a server-side apply:
    it needs ``fieldManager``, takes ``force`` (``true``/``false``) and a
    ``metadata.resourceVersion`` as a precondition, creates the object when there is none,
    fails (409) on fields that another manager owns with another value unless forced, and
    removes the fields its manager applied last time and no longer does.
    ``application/json-patch+json`` (``add``/``replace``, what Ray's autoscaler sends) is an
    update, like POST and PUT: it takes over the fields it changes, for the manager named by
    ``fieldManager`` or else by the User-Agent up to its first "/". ``force`` on anything
    but an apply is refused; another content type gets 415. Field ownership is kept as
    Kubernetes keeps it for KubeRay's CRDs, which have no list-type markers: maps field by
    field, every list whole (`_fields`); ``managers[key]`` maps each manager of an object to
    the field paths it owns."""

    PATH = re.compile(r"^/apis/ray\.io/v1/namespaces/([^/]+)/([^/]+)(?:/([^/]+))?$")

    def __init__(self, token: str = "s3cret", namespaces=("default", "kafkaml")):
        self.token = token
        self.namespaces = set(namespaces)
        self.mode = "ok"
        self.race: bool | int = False  # True: every GET is raced; a number: that many GETs
        self.objects: dict[tuple[str, str, str], dict] = {}
        self.managers: dict[tuple[str, str, str], dict[str, set[tuple]]] = {}
        self.requests: list[tuple[str, str, dict | list | None]] = []
        self.content_types: list[str] = []  # of each request, in the same order
        self._version = 0
        fake = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):
                pass

            def _reply(self, code: int, body: Any, text: bool = False):
                data = body.encode() if text else json.dumps(body).encode()
                self.send_response(code)
                self.send_header("Content-Type", "text/plain" if text else "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _handle(self):
                url = urlsplit(self.path)
                length = int(self.headers.get("Content-Length") or 0)
                ctype = (self.headers.get("Content-Type") or "").split(";")[0].strip()
                raw = self.rfile.read(length) if length else b""
                # an apply body is YAML (the kubernetes client sends JSON, which is YAML too)
                body = (yaml.safe_load(raw) if ctype == APPLY else json.loads(raw)) if raw else None
                fake.requests.append((self.command, self.path, body))
                fake.content_types.append(ctype)
                if self.headers.get("Authorization") != f"Bearer {fake.token}":
                    return self._reply(401, status_body(401, "Unauthorized", "Unauthorized"))
                if fake.mode == "no-crd":
                    return self._reply(404, "404 page not found\n", text=True)
                m = fake.PATH.match(url.path)
                if not m or m.group(2) not in KINDS.values():
                    return self._reply(404, "404 page not found\n", text=True)
                ns, plural, name = m.groups()
                if fake.mode == "forbidden":
                    return self._reply(
                        403,
                        status_body(
                            403,
                            "Forbidden",
                            f'{plural}.ray.io is forbidden: User "system:serviceaccount:'
                            f'default:ci" cannot {self.command.lower()} resource "{plural}" '
                            f'in API group "ray.io" in the namespace "{ns}"',
                        ),
                    )
                agent = (self.headers.get("User-Agent") or "unknown").split("/")[0]
                code, out = fake.serve(
                    self.command, ns, plural, name, url.query, body, content_type=ctype, agent=agent
                )
                self._reply(code, out)

            do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = _handle

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def close(self):
        self.server.shutdown()
        self.server.server_close()

    def serve(self, verb, ns, plural, name, query, body, content_type="", agent="unknown"):
        kind = {v: k for k, v in KINDS.items()}[plural]
        if ns not in self.namespaces:
            return 404, status_body(
                404, "NotFound", f'namespaces "{ns}" not found', ns, "namespaces"
            )
        params = parse_qs(query)
        manager = params.get("fieldManager", [agent])[0]
        key = (ns, plural, name)
        if verb == "PATCH":
            force = params.get("force", [None])[0]
            if content_type not in (APPLY, JSON_PATCH):
                return 415, status_body(
                    415,
                    "UnsupportedMediaType",
                    f"the body of the request was in an unknown format ({content_type})",
                )
            if force not in (None, "true", "false") or (force and content_type != APPLY):
                return 400, status_body(400, "BadRequest", f"invalid force {force!r} for a patch")
            if content_type == APPLY:
                if "fieldManager" not in params:
                    message = "PATCH requests with apply content type require fieldManager"
                    return 400, status_body(400, "BadRequest", message)
                return self._apply(key, kind, body, manager, force == "true")
        if verb == "POST":
            assert name is None and body["kind"] == kind and body["apiVersion"] == "ray.io/v1"
            try:
                validate_crd(body)
            except AssertionError as e:
                return 422, status_body(422, "Invalid", f"{kind} is invalid: {e}")
            key = (ns, plural, body["metadata"]["name"])
            if key in self.objects:
                return 409, status_body(
                    409, "AlreadyExists", f'{plural}.ray.io "{key[2]}" already exists', key[2]
                )
            return 201, self._store(key, body, manager)
        if verb == "GET" and name is None:
            selector = params.get("labelSelector", [""])[0]
            wanted = dict(p.split("=", 1) for p in selector.split(",") if p)
            items = [
                o
                for (n, p, _), o in sorted(self.objects.items())
                if n == ns
                and p == plural
                and wanted.items() <= o["metadata"].get("labels", {}).items()
            ]
            return 200, {"apiVersion": "ray.io/v1", "kind": f"{kind}List", "items": items}
        if key not in self.objects:
            return 404, status_body(404, "NotFound", f'{plural}.ray.io "{name}" not found', name)
        if verb == "GET":
            current = copy.deepcopy(self.objects[key])
            if self.race:  # someone else changes it right after this read
                self._store(key, self.objects[key], "someone")
                if self.race is not True:
                    self.race -= 1
            return 200, current
        if verb == "PATCH":  # a JSON patch
            try:
                patched = _json_patch(self.objects[key], body)
                validate_crd(patched)
            except (AssertionError, KeyError, IndexError, ValueError) as e:
                return 422, status_body(422, "Invalid", f"{kind} is invalid: {e}")
            return 200, self._store(key, patched, manager)
        if verb == "PUT":
            validate_crd(body)
            if (
                body["metadata"].get("resourceVersion")
                != self.objects[key]["metadata"]["resourceVersion"]
            ):
                return 409, status_body(409, "Conflict", "the object has been modified", name)
            return 200, self._store(key, body, manager)
        if verb == "DELETE":
            del self.objects[key]
            self.managers.pop(key, None)
            return 200, status_body(200, "", "", name)
        raise AssertionError(verb)

    def _apply(self, key, kind, body, manager, force):
        """A server-side apply of ``body`` by ``manager``."""
        ns, plural, name = key
        meta = body.get("metadata") or {}
        what = (body.get("apiVersion"), body.get("kind"), meta.get("name"))
        if what != ("ray.io/v1", kind, name):
            return 400, status_body(400, "BadRequest", "apiVersion, kind or name do not match")
        live = self.objects.get(key)
        version = meta.get("resourceVersion")
        if version is not None and (live is None or version != live["metadata"]["resourceVersion"]):
            return 409, status_body(
                409,
                "Conflict",
                f'Operation cannot be fulfilled on {plural}.ray.io "{name}": the object has '
                "been modified; please apply your changes to the latest version and try again",
                name,
            )
        owners = {m: set(paths) for m, paths in self.managers.get(key, {}).items()}
        mine, current = _fields(body), _fields(live)
        conflicts = sorted(
            (m, path)
            for m, paths in owners.items()
            if m != manager
            for path in paths & mine.keys()
            if current.get(path) != mine[path]
        )
        if conflicts and not force:
            listed = ", ".join(f'conflict with "{m}": .{".".join(p)}' for m, p in conflicts)
            return 409, status_body(
                409, "Conflict", f"Apply failed with {len(conflicts)} conflict(s): {listed}", name
            )
        for m, path in conflicts:
            owners[m].discard(path)
        others = set().union(*(paths for m, paths in owners.items() if m != manager))
        obj = copy.deepcopy(live) if live else {"metadata": {}}
        for path in owners.get(manager, set()) - mine.keys() - others:
            _drop(obj, path)  # applied last time, not now, and nobody else's
        for path, value in mine.items():
            _put(obj, path, value)
        obj.update(apiVersion="ray.io/v1", kind=kind)
        obj["metadata"]["name"] = name
        _defaults(crd_validators()[kind].schema, obj)
        try:
            validate_crd(obj)
        except AssertionError as e:
            return 422, status_body(422, "Invalid", f"{kind} is invalid: {e}")
        owners[manager] = set(mine)
        self.managers[key] = {m: paths for m, paths in owners.items() if paths}
        self._version += 1
        obj["metadata"].update(namespace=ns, resourceVersion=str(self._version))
        self.objects[key] = obj
        return (200 if live else 201), copy.deepcopy(obj)

    def _store(self, key, body, manager):
        """An update (POST, PUT, JSON patch) by ``manager``: it takes over what it changes."""
        obj = copy.deepcopy(body)
        _defaults(crd_validators()[obj["kind"]].schema, obj)
        before, after = _fields(self.objects.get(key)), _fields(obj)
        changed = {p for p in after if p not in before or before[p] != after[p]}
        changed |= before.keys() - after.keys()
        owners = self.managers.setdefault(key, {})
        for paths in owners.values():
            paths -= changed
        owners.setdefault(manager, set()).update(changed & after.keys())
        self.managers[key] = {m: paths for m, paths in owners.items() if paths}
        self._version += 1
        obj["metadata"].update(namespace=key[0], resourceVersion=str(self._version))
        self.objects[key] = obj
        return obj


def status_body(code, reason, message, name=None, kind=None):
    details = {"name": name, "group": "ray.io", "kind": kind} if name else {}
    return {
        "kind": "Status",
        "apiVersion": "v1",
        "status": "Success" if code < 300 else "Failure",
        "message": message,
        "reason": reason,
        "details": details,
        "code": code,
    }
