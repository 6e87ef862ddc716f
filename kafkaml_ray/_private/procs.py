"""Local processes and ports: what the stack, the panel's launcher, the tests and the
benchmarks need to find free ports on 127.0.0.1 and to tell whether a port answers."""

from __future__ import annotations

import socket

__all__ = ["free_ports", "port_open"]


def free_ports(count: int) -> int:
    """The first of ``count`` consecutive free ports on 127.0.0.1.

    >>> base = free_ports(3)
    >>> 0 < base and base + 3 <= 65000
    True
    """
    for _ in range(200):
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            base = s.getsockname()[1]
        if base + count > 65000:
            continue
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
