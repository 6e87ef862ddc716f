"""Local processes and ports: what the stack, the panel's launcher, the embedded broker, the
tests and the benchmarks share to run services on this machine.

- ports: `free_ports` (consecutive free ports on 127.0.0.1), `port_open`;
- background services: `spawn` (a process in a session of its own, its output appended to
  a log file, its pid in a pid file), `read_pid` (the pid file's process, if it still
  runs), `write_pid`, `pid_alive`, `stop_pid` (SIGTERM, then SIGKILL to its process
  group) and `wait_ready` (poll until a service answers, or say why not);
- `run_dir` (``$KAFKAML_HOME/run``, the stack's logs and pid files), `Part`, one service
  of the stack as ``kafkaml-ray status`` reports it, and `local_ray_running` (whether the
  stack's Ray head runs: `kafkaml_ray.stack` starts it, `_private.rayutil` connects to it).
"""

from __future__ import annotations

import contextlib
import logging
import os
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from kafkaml_ray.errors import Unavailable

if TYPE_CHECKING:
    from kafkaml_ray.settings import Settings

__all__ = [
    "free_ports",
    "port_open",
    "Part",
    "run_dir",
    "local_ray_running",
    "spawn",
    "write_pid",
    "read_pid",
    "pid_alive",
    "stop_pid",
    "wait_ready",
]

logger = logging.getLogger(__name__)


# -- ports ---------------------------------------------------------------------------------
def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports on 127.0.0.1, between 20000 and 32767:
    above Ray's worker ports (10002-19999) and below the range the OS hands out itself
    (32768 and up), so that no process started meanwhile (a Ray head picks ports of its own
    as it starts) takes one before the program it is chosen for binds it.

    >>> base = free_ports(3)
    >>> 20000 <= base and base + 3 <= 32768
    True
    """
    import random

    for _ in range(500):
        base = random.randrange(20000, 32768 - count)
        try:
            for port in range(base, base + count):
                with socket.socket() as s:
                    s.bind(("127.0.0.1", port))
        except OSError:
            continue
        return base
    raise RuntimeError("no free ports")


def port_open(port: int, host: str = "127.0.0.1") -> bool:
    """Whether something accepts connections on ``host:port`` (within half a second)."""
    try:
        with socket.create_connection((host, port), timeout=0.5):
            return True
    except OSError:
        return False


# -- the stack's services ------------------------------------------------------------------
@dataclass(frozen=True)
class Part:
    """One service of the stack as `status` reports it."""

    name: str
    running: bool
    address: str
    detail: str = ""


def run_dir(settings: Settings) -> Path:
    """``$KAFKAML_HOME/run`` (made if missing): the logs and pid files of the Ray head and
    the control panel."""
    path = settings.home / "run"
    path.mkdir(parents=True, exist_ok=True)
    return path


def local_ray_running(settings: Settings) -> bool:
    """Whether the Ray head that ``kafkaml-ray up`` started (`kafkaml_ray.stack.start_ray`,
    pid file ``$KAFKAML_HOME/run/ray.pid``) runs and answers."""
    return read_pid(run_dir(settings) / "ray.pid", "ray") is not None and port_open(
        settings.ray_port
    )


# -- background processes ------------------------------------------------------------------
def spawn(
    cmd: Sequence[str],
    log: Path,
    *,
    env: Mapping[str, str] | None = None,
    cwd: Path | None = None,
    pid_file: Path | None = None,
    note: str = "",
) -> subprocess.Popen:
    """Start ``cmd`` in a session (and process group) of its own, so that it outlives the
    process that starts it and `stop_pid` ends all it started; stdin from /dev/null, stdout
    and stderr appended to ``log``. With ``pid_file``, write its pid there (`write_pid`,
    with ``note``) as soon as it runs."""
    with open(log, "ab") as out:  # the child keeps its own copy of the descriptor
        proc = subprocess.Popen(
            list(cmd),
            stdout=out,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env=None if env is None else dict(env),
            cwd=cwd,
            start_new_session=True,
        )
    if pid_file is not None:
        write_pid(pid_file, proc.pid, note)
    return proc


def write_pid(path: Path, pid: int, note: str = "") -> None:
    """Write ``pid`` (and after a space ``note``, e.g. a port or URL) to ``path``."""
    path.write_text(f"{pid} {note}" if note else str(pid))


def read_pid(path: Path, marker: str) -> tuple[int, str] | None:
    """The pid in ``path`` and the note written after it, if that process still runs and
    its command line holds ``marker``; None without a pid file, for a process that is gone,
    and for a pid reused by another program."""
    try:
        pid_text, _, note = path.read_text().strip().partition(" ")
        pid = int(pid_text)
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
    except (OSError, ValueError):
        return None
    if marker.encode() not in cmdline or not pid_alive(pid):
        return None
    return pid, note.strip()


def pid_alive(pid: int) -> bool:
    """Whether process ``pid`` runs: it exists, this user may signal it, and it is no zombie
    (a process that exited and was not reaped yet counts as gone)."""
    try:
        os.kill(pid, 0)
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    # "pid (command) state ...": the command may hold spaces and parentheses.
    fields = stat.rpartition(")")[2].split()
    return bool(fields) and fields[0] != "Z"


def stop_pid(pid: int, timeout: float = 20.0, what: str = "process") -> None:
    """Stop ``pid``, the leader of a process group that `spawn` started: SIGTERM, up to
    ``timeout`` seconds to exit, then SIGKILL to the whole group (the leader if it ignored
    SIGTERM, and whatever it left behind). Nothing happens when it is gone already."""
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        return
    deadline = time.monotonic() + timeout
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.2)
    if pid_alive(pid):
        logger.warning("%s %d ignored SIGTERM for %.0fs; killing it", what, pid, timeout)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    deadline = time.monotonic() + 10.0  # SIGKILL ends it unless the kernel holds it
    while pid_alive(pid) and time.monotonic() < deadline:
        time.sleep(0.1)


def wait_ready(
    ready: Callable[[], bool],
    timeout: float,
    *,
    timed_out: str,
    proc: subprocess.Popen | None = None,
    exited: Callable[[int], str] | None = None,
    interval: float = 0.5,
) -> None:
    """Poll ``ready()`` every ``interval`` seconds until it is true. Raise `Unavailable`
    with ``timed_out`` after ``timeout`` seconds, or with ``exited(returncode)`` as soon as
    ``proc`` (the service's process, if given) exits."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc is not None and proc.poll() is not None:
            code = proc.returncode
            raise Unavailable(exited(code) if exited else f"the process exited with code {code}")
        if ready():
            return
        time.sleep(interval)
    raise Unavailable(timed_out)
