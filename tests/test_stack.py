"""`kafkaml-ray up|status|down` as a new user runs them, on a fresh machine: an empty ``HOME``
(no Ray token, no ``~/.kafkaml-ray``, no caches; only the Maven repository is passed in,
explicitly), a stack of its own on free ports, driven through the CLI in subprocesses. On a
2-CPU Ray it trains, serves the result twice on CPU, and trains again meanwhile."""

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
import uuid
from pathlib import Path

import numpy as np
import pytest

from tests.conftest import EXAMPLES, free_ports

pytestmark = pytest.mark.integration


def _fresh_env(tmp_path: Path) -> dict[str, str]:
    home = tmp_path / "home"
    home.mkdir()
    maven = os.environ.get("MAVEN_OPTS", "")
    if "maven.repo.local" not in maven:  # the one download reused, and said so
        maven += f" -Dmaven.repo.local={Path.home() / '.m2' / 'repository'}"
    env = {
        **os.environ,
        "HOME": str(home),
        "XDG_CACHE_HOME": str(home / ".cache"),
        "MAVEN_OPTS": maven.strip(),
        "KAFKAML_BROKER_PORT": str(free_ports(2)),
        "KAFKAML_RAY_PORT": str(free_ports(3)),
        "KAFKAML_DASHBOARD_PORT": str(free_ports(1)),
        "KAFKAML_SERVE_PORT": str(free_ports(1)),
        "KAFKAML_UI_PORT": str(free_ports(1)),
        "KAFKAML_RAY_CPUS": "2",
    }
    for name in (
        "KAFKAML_HOME",  # the default, under the empty HOME
        "KAFKAML_BOOTSTRAP",
        "KAFKAML_DB",
        "KAFKAML_ARTIFACTS",
        "RAY_ADDRESS",
        "RAY_AUTH_TOKEN",
        "RAY_AUTH_TOKEN_PATH",
    ):
        env.pop(name, None)
    return env


def _until(what: str, check, timeout: float = 300):
    """``check()``'s first true answer, asked every 2 s; fail after ``timeout`` s."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if found := check():
            return found
        time.sleep(2)
    raise AssertionError(f"timed out waiting for {what}")


def test_a_fresh_machine_up_train_serve_and_down(tmp_path):
    env = _fresh_env(tmp_path)
    home = Path(env["HOME"])
    assert not (home / ".ray").exists()  # no Ray token beforehand

    began = time.monotonic()

    def cli(*args: str, json_out: bool = True):
        out = subprocess.run(
            [sys.executable, "-m", "kafkaml_ray", *args, *(["--json"] if json_out else [])],
            env=env,
            capture_output=True,
            text=True,
            timeout=400,
            cwd=tmp_path,
        )
        assert out.returncode == 0, f"{args}: {out.stderr[-3000:]}"
        print(f"{time.monotonic() - began:7.1f}s  kafkaml-ray {' '.join(args)}")  # (the time)
        return json.loads(out.stdout) if json_out else out.stdout

    def parts(listed) -> dict[str, dict]:
        return {p["name"]: p for p in listed}

    def trained(dep_id: int, timeout: float = 400) -> dict:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            dep = cli("train", "show", str(dep_id))
            if all(r["status"] in ("finished", "failed", "stopped") for r in dep["results"]):
                return dep
            time.sleep(2)
        raise AssertionError(f"deployment {dep_id} did not finish: {dep}")

    try:
        up = parts(cli("up"))
        assert {n: p["running"] for n, p in up.items()} == {
            "kafka": True,
            "ray": True,
            "listener": True,
            "ui": True,
        }
        assert (home / ".ray" / "auth_token").is_file()  # made by `up`, where Ray looks
        assert (home / ".kafkaml-ray").is_dir()
        assert up["kafka"]["address"] == f"127.0.0.1:{env['KAFKAML_BROKER_PORT']}"
        ui = up["ui"]["address"]
        assert ui.startswith("http://127.0.0.1:")
        with urllib.request.urlopen(f"{ui}/_stcore/health", timeout=10) as r:
            assert r.status == 200
        where = {n: (p["running"], p["address"]) for n, p in up.items()}
        again = parts(cli("up"))  # starting twice is harmless
        assert {n: (p["running"], p["address"]) for n, p in again.items()} == where
        assert again["ui"]["detail"] == up["ui"]["detail"]  # the same panel process
        assert {n: (p["running"], p["address"]) for n, p in parts(cli("status")).items()} == where

        # One small training, as the README writes it.
        code = str(EXAMPLES / "digits_cnn_pytorch.py")
        cli("model", "add", "cnn", "-f", "pytorch", "--file", code)
        cli("config", "create", "digits", "cnn")
        dep = cli("train", "deploy", "digits", "--kwargs", "epochs=2")
        from sklearn.datasets import load_digits

        from kafkaml_ray.ingest import RawSink

        x, y = load_digits(return_X_y=True)
        bootstrap = f"127.0.0.1:{env['KAFKAML_BROKER_PORT']}"
        with RawSink(bootstrap, f"digits-{uuid.uuid4().hex[:6]}", dep["id"], test_rate=0.1) as sink:
            sink.send_many(x.astype(np.float32).reshape(-1, 8, 8), y)
        first = trained(dep["id"])
        result = first["results"][0]
        assert result["status"] == "finished", result["error"]

        # Two CPU inferences and a training at once on the 2-CPU Ray: each inference holds
        # only what its ingress uses.
        for i in range(2):
            inf = cli(
                "infer", "deploy", str(result["id"]),
                "--input-topic", f"in-{i}", "--output-topic", f"out-{i}",
            )  # fmt: skip
            assert inf["status"] == "running"
        second = cli("train", "deploy", "digits", "--kwargs", "epochs=1")
        cli(
            "datasource",
            "resend",
            str(first["datasource_id"]),
            "-d",
            str(second["id"]),
            json_out=False,
        )
        second = trained(second["id"], timeout=300)
        assert second["results"][0]["status"] == "finished", second["results"][0]
        assert [i["status"] for i in cli("infer", "list")] == ["running", "running"]

        # A long training holds one CPU and the two inferences half of the other: an
        # inference of three replicas (0.25 CPU each) places two and says what the third
        # waits for, naming who holds the CPUs.
        ds = str(first["datasource_id"])
        hold = cli("train", "deploy", "digits", "--kwargs", "epochs=100000")
        cli("datasource", "resend", ds, "-d", str(hold["id"]), json_out=False)
        holder = hold["results"][0]["id"]
        _until(
            "the long training to train",
            lambda: cli("train", "show", str(hold["id"]))["results"][0]["progress"].get("epoch"),
        )
        deploying = subprocess.Popen(
            [sys.executable, "-m", "kafkaml_ray", "infer", "deploy", str(result["id"])]
            + ["--input-topic", "in-wide", "--output-topic", "out-wide", "--replicas", "3"],
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
            cwd=tmp_path,
        )
        try:
            # Two replicas fit: once they run, the third is the one that waits.
            settled = r"KafkaIngress wants 3 replicas, 2 run; "

            def wide_waits() -> str | None:
                listed = [i for i in cli("infer", "list") if i["input_topic"] == "in-wide"]
                shown = listed and cli("infer", "show", str(listed[0]["id"]))["waiting"]
                return shown if shown and re.match(settled, shown) else None

            waiting = _until("the third replica to wait", wide_waits, timeout=150)
            assert "waiting for Ray resources: needs 0.25 CPU; free 0 CPU of 2 CPU" in waiting
            assert f"task train-result-{holder} (1 CPU)" in waiting, waiting
            assert "ServeReplica:inference-3:KafkaIngress x2 (0.5 CPU)" in waiting, waiting

            # A training with no CPU left says what it waits for, and runs once there is one.
            third = cli("train", "deploy", "digits", "--kwargs", "epochs=1")
            cli("datasource", "resend", ds, "-d", str(third["id"]), json_out=False)

            def training_waits() -> str | None:
                shown = cli("train", "show", str(third["id"]), json_out=False)
                return shown if "waiting for Ray resources" in shown else None

            shown = _until("the training to wait", training_waits, timeout=120)
            assert "waiting for Ray resources: needs 1 CPU; free 0 CPU of 2 CPU; held by " in shown
            assert f"task train-result-{holder} (1 CPU)" in shown, shown
            # Two replicas, or three if another inference's replica was restarted meanwhile
            # (a health check missed on 2 busy cores) and the third took its place.
            held = re.search(r"ServeReplica:inference-3:KafkaIngress x(\d) \(([\d.]+) CPU\)", shown)
            assert held and int(held[1]) in (2, 3), shown
            assert float(held[2]) == 0.25 * int(held[1]), shown
        finally:
            deploying.kill()
        wide = [i for i in cli("infer", "list") if i["input_topic"] == "in-wide"][0]
        cli("infer", "delete", str(wide["id"]), json_out=False)
        # Still short of a CPU (0.5 free); stopping the long training frees the one it held.
        cli("train", "stop", str(hold["id"]), json_out=False)
        assert cli("train", "show", str(hold["id"]))["results"][0]["status"] == "stopped"
        third = trained(third["id"], timeout=300)
        assert third["results"][0]["status"] == "finished", third["results"][0]
        assert "waiting" not in third["results"][0]["progress"]
    finally:
        down = cli("down")
    assert not any(p["running"] for p in down), down


def test_up_after_a_ray_head_crash_resumes_online_runs_and_inferences(tmp_path):
    """The Ray head dies (SIGKILL to its process group) while an online run trains and an
    inference serves its result. The next `up` sets what the store says runs against what
    runs: the online run resumes at its checkpoint's offsets, so its windows cover every
    message once (none lost, none trained twice), and the inference is deployed again and
    predicts every input, those sent while Ray was down included."""
    import os
    import signal

    from sklearn.datasets import load_digits

    from kafkaml_ray.ingest import InferenceProducer, RawSink

    env = _fresh_env(tmp_path)
    home = Path(env["HOME"])

    def cli(*args: str, json_out: bool = True, stderr: list | None = None):
        out = subprocess.run(
            [sys.executable, "-m", "kafkaml_ray", *args, *(["--json"] if json_out else [])],
            env=env, capture_output=True, text=True, timeout=400, cwd=tmp_path,
        )  # fmt: skip
        assert out.returncode == 0, f"{args}: {out.stderr[-3000:]}"
        if stderr is not None:
            stderr.append(out.stderr)
        return json.loads(out.stdout) if json_out else out.stdout

    def windows(result_id: int) -> list[dict]:
        return cli("result", "windows", str(result_id))

    x, y = load_digits(return_X_y=True)
    x = x.astype(np.float32).reshape(-1, 8, 8)
    bootstrap = f"127.0.0.1:{env['KAFKAML_BROKER_PORT']}"
    topic, inp, out = (f"{t}-{uuid.uuid4().hex[:6]}" for t in ("online", "in", "out"))
    try:
        cli("up", "--no-ui")
        cli(
            "model",
            "add",
            "cnn",
            "-f",
            "pytorch",
            "--file",
            str(EXAMPLES / "digits_cnn_pytorch.py"),
        )
        cli("config", "create", "digits", "cnn")
        dep = cli(
            "train", "deploy", "digits", "--kwargs", "epochs=1", "--online",
            "--window-messages", "150", "--window-seconds", "3", "--stream-timeout-s", "-1",
        )  # fmt: skip
        rid = dep["results"][0]["id"]
        sink = RawSink(bootstrap, topic, dep["id"], online=True, validation_rate=0.1)
        sink.send_many(x[:300], y[:300])
        sink._producer.flush(30)
        _until("two windows", lambda: len(windows(rid)) >= 2)
        cli("infer", "deploy", str(rid), "--input-topic", inp, "--output-topic", out)
        inputs = InferenceProducer(
            bootstrap, inp, "RAW", {"data_type": "float32", "data_reshape": "8 8"}
        )
        for i in range(50):
            inputs.send(x[i], key=str(i).encode())
        inputs.flush()

        pid = int((home / ".kafkaml-ray" / "run" / "ray.pid").read_text().split()[0])
        os.killpg(pid, signal.SIGKILL)  # the head crashes
        time.sleep(2)
        sink.send_many(x[300:600], y[300:600])  # (Kafka is up: the data waits there)
        sink.close()
        for i in range(50, 100):
            inputs.send(x[i], key=str(i).encode())
        inputs.close()

        said: list[str] = []
        cli("up", "--no-ui", stderr=said)
        assert f"result {rid}: resumed from its checkpoint (online)" in said[0], said
        assert "inference 1: deployed again" in said[0], said
        covered = _until(
            "every message in a window",
            lambda: (w := windows(rid)) and w[-1]["offsets"][f"{topic}:0"][1] == 600 and w,
        )
        spans = [w["offsets"][f"{topic}:0"] for w in covered]
        assert spans[0][0] == 0 and all(
            a[1] == b[0] for a, b in zip(spans, spans[1:], strict=False)
        )
        assert sum(w["messages"] for w in covered) == 600  # none lost, none twice

        from confluent_kafka import Consumer

        reader = Consumer({"bootstrap.servers": bootstrap, "group.id": uuid.uuid4().hex,
                           "auto.offset.reset": "earliest"})  # fmt: skip
        reader.subscribe([out])
        offsets, deadline = set(), time.monotonic() + 240
        while len(offsets) < 100 and time.monotonic() < deadline:
            for m in reader.consume(100, timeout=1.0):
                if m.error() is None:
                    offsets.add(int(dict(m.headers())["kafkaml-input-offset"]))
        reader.close()
        assert offsets == set(range(100))  # every input, those sent while Ray was down too
        cli("train", "stop", str(dep["id"]), json_out=False)
    finally:
        cli("down")
