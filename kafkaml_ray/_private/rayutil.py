"""Connecting to Ray the same way from every process."""

from __future__ import annotations

import contextlib
import functools
import logging
import os
import signal
import threading
from collections.abc import Callable, Iterator
from typing import Any

from kafkaml_ray.errors import InvalidInput, Unavailable
from kafkaml_ray.settings import Settings

__all__ = [
    "ensure_ray",
    "check_shared_state",
    "token_auth",
    "resource_wait",
    "get_saying_why",
    "placement_pending",
    "actor_name",
    "start_detached",
    "run_detached",
    "OneShot",
    "find_actor",
    "stop_detached",
    "cancellable",
    "NAMESPACE",
    "package_fingerprint",
]

logger = logging.getLogger(__name__)
NAMESPACE = "kafkaml"


def token_auth(create: bool = False) -> None:
    """Keep Ray's token authentication on in this process too (RAY_AUTH_MODE=token unless
    set otherwise), also when ``ray`` was imported before kafkaml_ray.

    With ``create``, make the token where Ray looks for it (``RAY_AUTH_TOKEN``,
    ``RAY_AUTH_TOKEN_PATH``, else ``~/.ray/auth_token``) when there is none: a new local
    ``ray.init()`` does that itself, ``ray start --head`` does not, and a fresh machine has
    no token yet.
    """
    import sys

    if os.environ.setdefault("RAY_AUTH_MODE", "token") != "token":
        return
    raylet = sys.modules.get("ray._raylet")
    if raylet is not None:
        raylet.Config.initialize("")  # re-read the mode from the environment
    if create:
        from ray._private.authentication.authentication_token_setup import (
            ensure_token_if_auth_enabled,
        )

        ensure_token_if_auth_enabled(create_token_if_missing=True)


@functools.cache
def package_fingerprint() -> str:
    """A hash of this installed kafkaml-ray's code (its ``.py`` files): it changes with
    any upgrade or edit, where the version number may not."""
    import hashlib
    from pathlib import Path

    root = Path(__file__).resolve().parent.parent
    digest = hashlib.sha256()
    for path in sorted(root.rglob("*.py")):
        digest.update(str(path.relative_to(root)).encode() + b"\0" + path.read_bytes())
    return digest.hexdigest()[:12]


def actor_name(kind: str, settings: Settings, number: int) -> str:
    """The name of a detached actor for row ``number`` of this store (``training-<tag>-7``):
    ids restart in another store (another database on the same Ray cluster, a test's own),
    so the store's tag keeps the names of two stores apart."""
    import hashlib

    tag = hashlib.sha256(settings.db_url.encode()).hexdigest()[:8]
    return f"{kind}-{tag}-{number}"


def ray_address(settings: Settings) -> str | None:
    """RAY_ADDRESS, else the local head that `kafkaml-ray up` started, else None."""
    if settings.ray_address:
        return settings.ray_address
    from kafkaml_ray._private.procs import local_ray_running

    if local_ray_running(settings):
        return f"127.0.0.1:{settings.ray_port}"
    return None


def ensure_ray(settings: Settings) -> None:
    """Connect this process to Ray (the configured cluster, the local head, or a new one)."""
    import ray

    if ray.is_initialized():
        return
    token_auth()
    address = ray_address(settings)
    if address is None:
        logger.info("no Ray cluster running: starting a local one in this process")
        os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    ray.init(
        address=address or "local",  # never join some other cluster found on the machine
        namespace=NAMESPACE,
        include_dashboard=False if address is None else None,
        log_to_driver=False,
        configure_logging=False,
    )


def _alive_nodes(settings: Settings) -> int:
    """How many alive nodes the Ray cluster has: this process's connection, else the
    configured cluster (its job server's state API for an http(s) address); 1 when no
    cluster runs (a Ray started here has one node)."""
    import ray

    if not ray.is_initialized():
        address = ray_address(settings)
        if address is None:
            return 1
        if address.startswith(("http://", "https://")):
            from ray.util.state import list_nodes

            token_auth()
            alive = list_nodes(address=address, filters=[("state", "=", "ALIVE")], limit=1000)
            return len(alive)
        try:
            ensure_ray(settings)
        except (ConnectionError, RuntimeError) as e:
            raise Unavailable(f"the Ray cluster at {address} did not answer: {e}") from None
    return sum(1 for node in ray.nodes() if node.get("Alive"))


def check_shared_state(settings: Settings) -> None:
    """Refuse a Ray cluster of several nodes when the metadata store is a SQLite file or
    the artifacts are in the default local directory (``KAFKAML_ARTIFACTS`` unset): runs on
    other nodes would write to their own empty database and directory, and their results
    would stay "training" forever. One node, or PostgreSQL and shared artifacts: nothing to
    refuse. What starts work on Ray calls it (deploying a training or an inference, a
    search, the control listener, a training runner); stopping and status never do."""
    local = []
    if settings.db_url.startswith("sqlite"):
        local.append(f"the metadata store is SQLite ({settings.db_url})")
    if settings.artifacts is None:
        local.append(f"the artifacts are in the local directory {settings.artifacts_uri}")
    if not local:
        return
    nodes = _alive_nodes(settings)
    if nodes > 1:
        raise InvalidInput(
            f"the Ray cluster has {nodes} nodes, but {' and '.join(local)}: work on the "
            "other nodes would not see them. Set KAFKAML_DB to a PostgreSQL URL every node "
            "reaches (postgresql+psycopg://user:password@host/kafkaml) and KAFKAML_ARTIFACTS "
            "to a directory every node mounts or an fsspec URI (s3://bucket/prefix), or use "
            "a Ray cluster of one node"
        )


def start_detached(settings: Settings, cls: type, name: str, *args: Any, **options: Any) -> Any:
    """Start ``cls`` as the detached actor ``name`` in kafkaml's namespace: it outlives the
    process that starts it. It reserves no CPU (what it runs reserves its own); ``options``
    go to Ray's ``.options()`` (restarts, concurrency, ``get_if_exists``)."""
    import ray

    ensure_ray(settings)
    check_shared_state(settings)
    options = {"num_cpus": 0, **options}
    return (
        ray.remote(cls)
        .options(name=name, namespace=NAMESPACE, lifetime="detached", **options)
        .remote(*args)
    )


class OneShot:
    """The base of a one-shot job that `run_detached` starts: its ``run`` calls `began`
    first thing, which tells the starter (waiting in `wait_began`) that the call arrived."""

    def __init__(self) -> None:
        self._began = threading.Event()

    def began(self) -> None:
        """Say that ``run`` began (called from ``run``)."""
        self._began.set()

    def wait_began(self, timeout: float) -> bool:
        """Whether ``run`` began within ``timeout`` seconds."""
        return self._began.wait(timeout)


def run_detached(
    settings: Settings, cls: type[OneShot], name: str, *args: Any, timeout: float = 120.0
) -> None:
    """Run ``cls().run(*args)`` in the detached actor ``name``: a one-shot job that ends
    itself when ``run`` returns, and whose ``stop()`` may be called while ``run`` works
    (`stop_detached`). Ray does not restart it. Returns once ``run`` has begun: a call to an
    actor that is not up yet waits in the caller's process, and a caller that exits at once
    (a CLI command) would lose it, leaving the actor idle for good."""
    import ray

    actor = start_detached(settings, cls, name, max_restarts=0, max_concurrency=2)
    actor.run.remote(*args)
    if not ray.get(actor.wait_began.remote(timeout), timeout=timeout + 30):
        raise Unavailable(f"{name} did not begin its work within {timeout:.0f}s")


def find_actor(settings: Settings, name: str) -> Any | None:
    """The detached actor ``name``, or None when it is not running."""
    import ray

    ensure_ray(settings)
    try:
        return ray.get_actor(name, namespace=NAMESPACE)
    except ValueError:
        return None


def stop_detached(
    settings: Settings,
    name: str,
    method: str,
    *args: Any,
    grace: float = 30.0,
    exit_wait: float = 0.0,
) -> bool:
    """Stop the detached actor ``name``: call its ``method(*args)`` (waiting ``grace``
    seconds), wait up to ``exit_wait`` seconds for it to exit by itself, then kill it.
    True if it was running."""
    import time

    import ray

    actor = find_actor(settings, name)
    if actor is None:
        return False
    try:
        ray.get(getattr(actor, method).remote(*args), timeout=grace)
        deadline = time.monotonic() + exit_wait
        while time.monotonic() < deadline:
            if find_actor(settings, name) is None:
                return True  # it finished and exited
            time.sleep(0.2)
    except Exception:  # noqa: BLE001 - dead or stuck: the kill below ends it
        logger.warning("%s: no graceful stop", name, exc_info=True)
    ray.kill(actor, no_restart=True)
    return True


def _amounts(resources: dict[str, float], names: list[str]) -> str:
    return ", ".join(f"{resources.get(k, 0.0):g} {k}" for k in names)


def resource_wait(need: dict[str, float]) -> str | None:
    """Why something that needs ``need`` (e.g. ``{"CPU": 1}``) cannot start on the connected
    Ray cluster: what it needs, what is free, and who holds the rest; None when it fits.

    Holders are the live actors and tasks with resources (Serve replicas by application and
    deployment) and the placement groups of training runs, read with Ray's state API.
    """
    import ray

    free, total = ray.available_resources(), ray.cluster_resources()
    short = {k: v for k, v in need.items() if v and free.get(k, 0.0) + 1e-9 < v}
    if not short:
        return None
    names = [k for k, v in need.items() if v]
    text = (
        f"waiting for Ray resources: needs {_amounts(need, names)}; free "
        f"{_amounts(free, names)} of {_amounts(total, names)}"
    )
    held: dict[str, list[float]] = {}  # holder: [how many, amount]

    def hold(name: str, resources: dict | None) -> None:
        amount = sum((resources or {}).get(k, 0.0) for k in short)
        if amount > 0:
            count, total_amount = held.get(name, [0, 0.0])
            held[name] = [count + 1, total_amount + amount]

    try:
        from ray.util.state import list_actors, list_placement_groups, list_tasks

        for a in list_actors(filters=[("state", "=", "ALIVE")], detail=True, limit=1000):
            if not a.placement_group_id:  # else counted with its placement group
                hold(a.class_name or a.name or "actor", a.required_resources)
        for pg in list_placement_groups(filters=[("state", "=", "CREATED")], detail=True):
            for bundle in pg.bundles or []:
                name = f"placement group {pg.name or pg.placement_group_id[:8]}"
                hold(name, bundle.get("unit_resources", bundle))
        for t in list_tasks(filters=[("state", "=", "RUNNING")], detail=True, limit=1000):
            if t.type == "NORMAL_TASK":
                hold(f"task {t.name}", t.required_resources)
    except Exception:  # noqa: BLE001 - no state API (no dashboard): needs and free only
        return text
    holders = sorted(held.items(), key=lambda kv: -kv[1][1])
    if holders:
        what = "/".join(short)
        text += "; held by " + ", ".join(
            f"{name}{f' x{n}' if n > 1 else ''} ({amount:g} {what})"
            for name, (n, amount) in holders[:6]
        )
        if len(holders) > 6:
            text += f" and {len(holders) - 6} more"
    return text


def placement_pending() -> bool:
    """Whether a placement group (a training run's workers) waits to be placed."""
    from ray.util.state import list_placement_groups

    return bool(list_placement_groups(filters=[("state", "=", "PENDING")], limit=1))


def unplaced(refs: list) -> bool:
    """Whether any of the tasks behind ``refs`` waits for a node with the resources it asks."""
    from ray.util.state import get_task

    attempts = [get_task(ref.task_id().hex()) for ref in refs]
    return any(
        t.state == "PENDING_NODE_ASSIGNMENT"
        for a in attempts
        for t in (a if isinstance(a, list) else [a])
        if t is not None
    )


def get_saying_why(
    refs: list, need: dict[str, float], say: Callable[[str | None], None], every: float = 5.0
) -> list:
    """``ray.get(refs)``; while any of their tasks waits for resources, ``say`` what it needs,
    what is free and who holds it, every ``every`` seconds (``say(None)`` once they run)."""
    import ray

    pending, said = list(refs), False
    while pending:
        _, pending = ray.wait(pending, num_returns=len(pending), timeout=every)
        if not pending:
            break
        try:
            why = resource_wait(need) if unplaced(pending) else None
        except Exception:  # noqa: BLE001 - a report, never a reason to fail
            logger.debug("cannot tell what the tasks wait for", exc_info=True)
            continue
        if why or said:
            say(why)
            said = bool(why)
    return ray.get(list(refs))


@contextlib.contextmanager
def cancellable() -> Iterator[None]:
    """Let ``ray.cancel`` interrupt the Ray task running this block.

    Ray cancels a running task by raising KeyboardInterrupt in its main thread through
    Python's SIGINT handler. That does nothing when the worker process inherited SIGINT
    ignored (a Ray head started from a background job: bash starts ``&`` jobs with SIGINT
    ignored, and every process below keeps it), and the wrong thing when a library left its
    own handler (Ray Train's driver binds one to its run and never removes it, so a process
    kept warm would abort a finished run). The default handler for the block; the one
    before it afterwards. Outside the main thread (Tune trials), nothing changes.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        signal.signal(signal.SIGINT, previous)
