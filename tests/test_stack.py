"""`kafkaml-ray up|status|down` as a user runs them: a stack of its own (broker, Ray head,
control listener, control panel) on free ports under a temporary home, in subprocesses."""

import json
import os
import subprocess
import sys
import urllib.request

import pytest

from tests.conftest import free_ports

pytestmark = pytest.mark.integration


def test_up_status_down(tmp_path):
    env = {
        **os.environ,
        "KAFKAML_HOME": str(tmp_path),
        "KAFKAML_BROKER_PORT": str(free_ports(2)),
        "KAFKAML_RAY_PORT": str(free_ports(3)),
        "KAFKAML_DASHBOARD_PORT": str(free_ports(1)),
        "KAFKAML_SERVE_PORT": str(free_ports(1)),
        "KAFKAML_UI_PORT": str(free_ports(1)),
    }
    env.pop("RAY_ADDRESS", None)
    env.pop("KAFKAML_BOOTSTRAP", None)

    def cli(*args: str) -> dict[str, dict]:
        out = subprocess.run(
            [sys.executable, "-m", "kafkaml_ray", *args, "--json"],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
        )
        assert out.returncode == 0, out.stderr[-3000:]
        return {p["name"]: p for p in json.loads(out.stdout)}

    try:
        parts = cli("up")
        assert {n: p["running"] for n, p in parts.items()} == {
            "kafka": True,
            "ray": True,
            "listener": True,
            "ui": True,
        }
        assert parts["kafka"]["address"] == f"127.0.0.1:{env['KAFKAML_BROKER_PORT']}"
        ui = parts["ui"]["address"]
        assert ui.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{ui}/_stcore/health", timeout=10) as r:
            assert r.status == 200
        where = {n: (p["running"], p["address"]) for n, p in parts.items()}
        again = cli("up")  # starting twice is harmless
        assert {n: (p["running"], p["address"]) for n, p in again.items()} == where
        assert again["ui"]["detail"] == parts["ui"]["detail"]  # the same panel process
        assert {n: (p["running"], p["address"]) for n, p in cli("status").items()} == where
    finally:
        down = cli("down")
    assert not any(p["running"] for p in down.values()), down
