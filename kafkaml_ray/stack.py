"""The local stack: the embedded Kafka broker, a local Ray head, the control listener and
the control panel, started and stopped together (`kafkaml-ray up|down|status`).

Every service binds to 127.0.0.1. The Ray head keeps Ray's token authentication on.
Ports: Ray GCS ``KAFKAML_RAY_PORT`` (6380), its client server port+1, its dashboard agent
port+2; dashboard and job server ``KAFKAML_DASHBOARD_PORT`` (8265).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from kafkaml_ray._private.procs import port_open
from kafkaml_ray.broker import EmbeddedKafka
from kafkaml_ray.errors import Unavailable
from kafkaml_ray.settings import Settings

__all__ = ["Part", "up", "down", "status", "start_ray", "stop_ray", "local_ray_running"]

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Part:
    """One service of the stack as `status` reports it."""

    name: str
    running: bool
    address: str
    detail: str = ""


def _run_dir(settings: Settings) -> Path:
    path = settings.home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def _pid(path: Path, marker: str) -> int | None:
    try:
        pid = int(path.read_text())
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if marker.encode() not in cmdline:
        return None
    try:
        state = Path(f"/proc/{pid}/stat").read_text().split()[2]
    except OSError:
        return None
    return None if state == "Z" else pid


def _stop_pid(pid: int, timeout: float = 20.0) -> None:
    """SIGTERM the leader of a process group, then SIGKILL the group after ``timeout``."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and _pid_alive(pid):
        time.sleep(0.2)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)  # whatever the leader left behind


def _pid_alive(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().split()[2] != "Z"
    except OSError:
        return False


# -- Ray head ------------------------------------------------------------------------------
def local_ray_running(settings: Settings) -> bool:
    return _pid(_run_dir(settings) / "ray.pid", "ray") is not None and port_open(settings.ray_port)


def start_ray(settings: Settings, num_cpus: int | None = None, timeout: float = 120.0) -> str:
    """Start a local Ray head (``ray start --head --block`` in its own process group)."""
    address = f"127.0.0.1:{settings.ray_port}"
    if local_ray_running(settings):
        return address
    if port_open(settings.ray_port):
        raise Unavailable(
            f"port {settings.ray_port} is taken by another program; set KAFKAML_RAY_PORT to a "
            "free port, or RAY_ADDRESS to the Ray cluster that listens there"
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
    env = {
        **os.environ,
        **settings.env(),
        "TF_CPP_MIN_LOG_LEVEL": "2",
        "RAY_DISABLE_USAGE_STATS": "1",
        # One local node: nothing to drain on `down`; stop at once.
        "RAY_GRACEFUL_SHUTDOWN_DRAIN_TIMEOUT_S": "0",
        "RAY_AUTH_MODE": os.environ.get("RAY_AUTH_MODE", "token"),
    }
    env.pop("RAY_ADDRESS", None)
    # Ray jobs run `python -m ...`: make it this environment's python.
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"
    log = open(_run_dir(settings) / "ray.log", "ab")  # noqa: SIM115 - handed to the child
    offset = log.tell()
    proc = subprocess.Popen(
        cmd,
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        env=env,
        start_new_session=True,
    )
    log.close()
    (_run_dir(settings) / "ray.pid").write_text(str(proc.pid))
    log_path = _run_dir(settings) / "ray.log"
    _wait(
        # `ray start` reaches its --block loop (where SIGTERM stops it cleanly) after the job
        # server already answers: wait for both.
        lambda: _jobs_ready(settings) and _log_says(log_path, offset, b"block forever"),
        timeout,
        f"the Ray head did not start in {timeout:.0f}s; see {_run_dir(settings) / 'ray.log'}",
        proc,
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
    pid = _pid(_run_dir(settings) / "ray.pid", "ray")
    (_run_dir(settings) / "ray.pid").unlink(missing_ok=True)
    if pid is None:
        return False
    _stop_pid(pid)
    return True


def _wait(ready: Callable[[], bool], timeout: float, message: str, proc=None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            raise Unavailable(message.replace("did not start in", "exited before starting, within"))
        if ready():
            return
        time.sleep(0.5)
    raise Unavailable(message)


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

    if settings.embedded_broker:
        EmbeddedKafka(settings).start()
    if not settings.ray_address:
        start_ray(settings)
    start_listener(settings)
    if with_ui:
        from kafkaml_ray.ui.launch import start_ui

        start_ui(settings)
    return status(settings)


def down(settings: Settings) -> list[Part]:
    """Stop every part that `up` started (in reverse order)."""
    from kafkaml_ray.ingest.listener import stop_listener
    from kafkaml_ray.ui.launch import stop_ui

    stop_ui(settings)
    if settings.ray_address or local_ray_running(settings):
        stop_listener(settings)
    stop_ray(settings)
    if settings.embedded_broker:
        EmbeddedKafka(settings).stop()
    return status(settings)


def status(settings: Settings) -> list[Part]:
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
    from kafkaml_ray.ui.launch import ui_status

    parts.append(ui_status(settings))
    return parts


def _kafka_answers(settings: Settings) -> bool:
    from confluent_kafka.admin import AdminClient

    try:
        return bool(AdminClient(settings.kafka_config()).list_topics(timeout=3).brokers)
    except Exception:  # noqa: BLE001
        return False
