"""The README's set-up script, sourced as a user would into an interactive shell."""

import os
import shutil
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def _shell(script: str, path: str | None = None) -> str:
    env = {**os.environ, **({"PATH": path} if path else {})}
    done = subprocess.run(
        ["bash", "-c", script], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300
    )
    assert done.returncode == 0, done.stderr
    return done.stdout


def test_sourcing_the_setup_keeps_the_callers_shell_options():
    """It used to turn on ``set -euo pipefail`` in the caller's shell: the user's
    interactive shell then closed on the first command that failed."""
    out = _shell("source scripts/setup.sh; echo $?; set -o | grep -E '^(errexit|nounset|pipefail)'")
    lines = out.split("\n")
    assert lines[0] == "0"
    assert all(line.split()[-1] == "off" for line in lines[1:] if line), out


def test_a_setup_that_fails_returns_instead_of_closing_the_shell(tmp_path):
    """Without Maven it says what to install and returns 1; the shell goes on."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("bash", "dirname", "python3.11", "java"):
        found = shutil.which(tool)
        if found:
            (bin_dir / tool).symlink_to(found)
    out = _shell('source scripts/setup.sh 2>&1; echo "rc=$? still here"', path=str(bin_dir))
    assert "'mvn' not found" in out and "rc=1 still here" in out
