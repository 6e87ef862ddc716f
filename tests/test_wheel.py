"""A built wheel, not the checkout: it installs with everything a user needs (the panel, the
example models, the broker's pom), its command runs, and every public module imports.

The wheel goes into a folder of its own; the shared environment's dependencies are reused and
the checkout is kept off ``sys.path`` (the test checks where ``kafkaml_ray`` came from)."""

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "-q", "--no-deps", "--no-build-isolation"]
        + ["-w", str(tmp / "dist"), str(ROOT)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    (wheel,) = (tmp / "dist").glob("kafkaml_ray-*.whl")
    site = tmp / "site"
    subprocess.run(
        [sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(site)]
        + [str(wheel)],
        check=True,
        capture_output=True,
        timeout=300,
    )
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "KAFKAML_HOME")}
    env.update(PYTHONPATH=str(site), HOME=str(tmp / "home"), PYTHONSAFEPATH="1")
    # Run from an empty folder: neither the checkout nor its parent on the path.
    work = tmp / "work"
    work.mkdir()

    def run(*args: str) -> subprocess.CompletedProcess:
        return subprocess.run(args, cwd=work, env=env, capture_output=True, text=True, timeout=300)

    return site, run


def test_the_wheel_holds_no_top_level_package_but_kafkaml_ray(installed):
    site, _ = installed
    packages = {p.name for p in site.iterdir() if p.is_dir() and not p.name.endswith("-info")}
    assert packages - {"bin", "__pycache__"} == {"kafkaml_ray"}
    shipped = site / "kafkaml_ray"
    for path in ("examples/digits_cnn_pytorch.py", "ui/app.py", "ui/views/models.py"):
        assert (shipped / path).is_file(), path
    assert (shipped / "broker" / "pom.xml").is_file()


def test_the_command_runs_from_the_wheel(installed):
    site, run = installed
    out = run(str(site / "bin" / "kafkaml-ray"), "--version")
    assert out.returncode == 0 and "0.1.0" in out.stdout, out.stderr
    out = run(str(site / "bin" / "kafkaml-ray"), "demo", "--help")
    assert out.returncode == 0 and "end to end" in out.stdout, out.stderr


def test_every_public_module_imports_from_the_wheel(installed):
    site, run = installed
    code = (
        "import importlib, pkgutil, kafkaml_ray\n"
        f"assert kafkaml_ray.__file__.startswith({str(site)!r}), kafkaml_ray.__file__\n"
        "names = [m.name for m in pkgutil.walk_packages(kafkaml_ray.__path__, 'kafkaml_ray.')\n"
        "         if not any(p.startswith('_') for p in m.name.split('.'))\n"
        # Streamlit page scripts draw when imported: the panel test runs them.
        "         and not m.name.startswith(('kafkaml_ray.ui.app', 'kafkaml_ray.ui.views.'))]\n"
        "for n in names:\n"
        "    importlib.import_module(n)\n"
        "print(len(names))\n"
    )
    out = run(sys.executable, "-c", code)
    assert out.returncode == 0, out.stderr[-3000:]
    assert int(out.stdout.split()[-1]) >= 25
