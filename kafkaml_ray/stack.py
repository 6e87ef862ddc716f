"""The local stack: the embedded Kafka broker, a local Ray head, the control listener and
the control panel, started and stopped together (`kafkaml-ray up|down|status`).

Every service binds to 127.0.0.1. The Ray head keeps Ray's token authentication on.
Ports: Ray GCS ``KAFKAML_RAY_PORT`` (6380), its client server port+1, its dashboard agent
port+2; dashboard and job server ``KAFKAML_DASHBOARD_PORT`` (8265). Logs and pid files:
``$KAFKAML_HOME/run`` (the broker's: ``$KAFKAML_HOME/kafka``).

`Part`, `local_ray_running`, `run_dir`, `free_ports` and `connect` live in ``_private``
(so that the panel's launcher and ``_private/rayutil`` need not import this module) and are
re-exported here for scripts that run a stack of their own (the benchmarks).
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from kafkaml_ray._private.procs import (
    Part,
    free_ports,
    local_ray_running,
    port_open,
    read_pid,
    run_dir,
    spawn,
    stop_pid,
    wait_ready,
)
from kafkaml_ray._private.rayutil import ensure_ray as connect
from kafkaml_ray.broker import EmbeddedKafka
from kafkaml_ray.errors import Unavailable
from kafkaml_ray.panel import start_ui, stop_ui, ui_status
from kafkaml_ray.settings import Settings

__all__ = [
    "Part",
    "up",
    "down",
    "status",
    "start_ray",
    "stop_ray",
    "local_ray_running",
    "connect",
    "free_ports",
    "run_dir",
]

logger = logging.getLogger(__name__)


# -- Ray head (`local_ray_running` is in _private/procs, for rayutil too) -------------------
def ray_env(settings: Settings) -> dict[str, str]:
    """The environment of the local Ray head, which its workers (and so model code) inherit:
    this one's and the settings', without the panel's password."""
    env = {
        **os.environ,
        **settings.env(),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "RAY_DISABLE_USAGE_STATS": "1",
        # One local node: nothing to drain on `down`; stop at once.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
        # Idle worker processes beyond one per CPU live this long (Ray's default: 1 s), so
        # that a run's runner and read tasks find warm ones (`Settings.worker_idle_s`).
        "RAY_idle_worker_killing_time_threshold_ms": str(int(settings.worker_idle_s * 1000)),
    }
    # The head's own address, never the caller's RAY_ADDRESS: Ray code inside the cluster
    # that resolves "auto" (Ray Train's placement-group cleaner asking the state API whether
    # a run's controller lives, a Ray job's supervisor) otherwise reads the machine's last
    # `ray start` from /tmp/ray, which is another cluster when a second head was started
    # after ours; the cleaner then finds no controller and removes a running run's workers.
    env["RAY_ADDRESS"] = f"127.0.0.1:{settings.ray_port}"
    env.pop("KAFKAML_UI_PASSWORD", None)
    # Ray jobs run `python -m ...`: make it this environment's python.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    return env


def start_ray(settings: Settings, num_cpus: int | None = None, timeout: float = 120.0) -> str:
    """Start a local Ray head (``ray start --head --block`` in its own process group)."""
    address = f"127.0.0.1:{settings.ray_port}"
    if local_ray_running(settings):
        return address
    for port in (settings.ray_port, settings.ray_port + 1, settings.ray_port + 2):
        if port_open(port):  # (the head, its client server and its dashboard agent)
            raise Unavailable(
                f"port {port} is taken by another program (the Ray head uses KAFKAML_RAY_PORT "
                f"{settings.ray_port} and the two after it); set KAFKAML_RAY_PORT to the first "
                "of three free ports, or RAY_ADDRESS to the Ray cluster that listens there"
            )
    cmd = [
        sys.executable,
        "-m",
        "ray.scripts.scripts",
        "start",
        "--head",
        "--block",
        "--disable-usage-stats",
        "--node-ip-address",
        "127.0.0.1",
        "--port",
        str(settings.ray_port),
        "--ray-client-server-port",
        str(settings.ray_port + 1),
        "--dashboard-agent-listen-port",
        str(settings.ray_port + 2),
        "--include-dashboard",
        "true",
        "--dashboard-host",
        "127.0.0.1",
        "--dashboard-port",
        str(settings.dashboard_port),
    ]
    num_cpus = num_cpus if num_cpus is not None else settings.ray_cpus
    if num_cpus is not None:
        cmd += ["--num-cpus", str(num_cpus)]
    from kafkaml_ray._private.rayutil import token_auth

    token_auth(create=True)  # `ray start --head` needs the token to exist
    env = ray_env(settings)
    log_path = run_dir(settings) / "ray.log"
    offset = log_path.stat().st_size if log_path.exists() else 0  # where this start's lines begin
    proc = spawn(cmd, log_path, env=env, pid_file=run_dir(settings) / "ray.pid")
    wait_ready(
        # `ray start` reaches its --block loop (where SIGTERM stops it cleanly) after the job
        # server already answers: wait for both.
        lambda: _jobs_ready(settings) and _log_says(log_path, offset, b"block forever"),
        timeout,
        proc=proc,
        timed_out=f"the Ray head did not start in {timeout:.0f}s; see {log_path}",
        exited=lambda _: (
            f"the Ray head exited before starting, within {timeout:.0f}s; see {log_path}"
        ),
    )
    return address


def _jobs_ready(settings: Settings) -> bool:
    if not (port_open(settings.ray_port) and port_open(settings.dashboard_port)):
        return False
    from ray.job_submission import JobSubmissionClient

    from kafkaml_ray._private.rayutil import token_auth

    token_auth()
    try:
        JobSubmissionClient(f"http://127.0.0.1:{settings.dashboard_port}").list_jobs()
        return True
    except Exception:  # noqa: BLE001 - not ready yet
        return False


def _log_says(path: Path, offset: int, text: bytes) -> bool:
    with open(path, "rb") as f:
        f.seek(offset)
        return text in f.read()


def stop_ray(settings: Settings) -> bool:
    """Stop the Ray head that `start_ray` started; False if none ran."""
    found = read_pid(run_dir(settings) / "ray.pid", "ray")
    (run_dir(settings) / "ray.pid").unlink(missing_ok=True)
    if found is None:
        return False
    stop_pid(found[0], what="Ray head")
    return True


# -- the whole stack -----------------------------------------------------------------------
def _listener_part(settings: Settings) -> Part:
    from kafkaml_ray.ingest.listener import listener_status

    try:
        st = listener_status(settings)
    except Exception:  # noqa: BLE001 - Ray not reachable
        st = None
    detail = f"topic {settings.control_topic}"
    if st:
        detail += f", {st['processed']} control messages since it started"
    return Part("listener", bool(st and st["alive"]), "ray actor control-listener", detail)


def up(settings: Settings, with_ui: bool = False) -> list[Part]:
    """Start what is not running yet: broker, Ray head, control listener (and the UI)."""
    from kafkaml_ray.ingest.listener import start_listener
    from kafkaml_ray.train.launch import on_datasource

    if settings.embedded_broker:
        EmbeddedKafka(settings).start()
    if not settings.ray_address:
        start_ray(settings)
    start_listener(settings, on_datasource)  # (each datasource starts its training)
    if with_ui:
        start_ui(settings)
    return status(settings)


def down(settings: Settings) -> list[Part]:
    """Stop every part that `up` started (in reverse order)."""
    from kafkaml_ray.ingest.listener import stop_listener

    stop_ui(settings)
    if settings.ray_address or local_ray_running(settings):
        stop_listener(settings)
    stop_ray(settings)
    if settings.embedded_broker:
        EmbeddedKafka(settings).stop()
    return status(settings)


def status(settings: Settings) -> list[Part]:
    """Each part of the stack: whether it runs, and where."""
    parts = []
    if settings.embedded_broker:
        b = EmbeddedKafka(settings).status()
        detail = f"Apache Kafka {b.version} (embedded, KRaft)"
        parts.append(Part("kafka", b.running, b.address, detail))
    else:
        parts.append(
            Part("kafka", _kafka_answers(settings), settings.bootstrap_servers, "external")
        )
    ray_up = bool(settings.ray_address) or local_ray_running(settings)
    if settings.ray_address:
        parts.append(Part("ray", True, settings.ray_address, "external (RAY_ADDRESS)"))
    else:
        parts.append(
            Part(
                "ray",
                ray_up,
                f"127.0.0.1:{settings.ray_port}",
                f"dashboard and jobs on http://127.0.0.1:{settings.dashboard_port}",
            )
        )
    if ray_up:
        parts.append(_listener_part(settings))
    else:
        parts.append(Part("listener", False, "ray actor control-listener", "needs Ray"))
    parts.append(ui_status(settings))
    return parts


def _kafka_answers(settings: Settings) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        return bool(AdminClient(settings.kafka_config()).list_topics(timeout=3).brokers)
    except Exception:  # noqa: BLE001
        return False
