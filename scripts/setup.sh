#!/usr/bin/env bash
# Sets up what is missing to run kafkaml-ray from this checkout, then exports KAFKAML_PYTHON.
#
#   source scripts/setup.sh
#
# - One Python 3.11 virtual environment outside the clone, shared by every checkout:
#   $KAFKAML_VENV (default ~/.cache/kafkaml-ray/venv). It is brought up to date with
#   requirements/lock.txt (the versions we test) whenever that file changes, so a fresh
#   clone does not download PyTorch and TensorFlow again.
# - This checkout installed into it in editable mode (no dependencies, a few seconds).
# - The Kafka broker's jars are resolved by Maven on the first broker start (cached in ~/.m2).
#
# Sourced into an interactive shell it changes nothing but the variables it exports: the
# work runs in a subshell with its own `set -euo pipefail`, and a failure returns 1 instead
# of closing the shell.

_kml_root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
_kml_cache="${XDG_CACHE_HOME:-$HOME/.cache}/kafkaml-ray"
export KAFKAML_VENV="${KAFKAML_VENV:-$_kml_cache/venv}"

if ! (
  set -euo pipefail
  _need() {  # command, what to do without it
    command -v "$1" >/dev/null 2>&1 || { echo "kafkaml-ray setup: '$1' not found. $2" >&2; exit 1; }
  }
  _need python3.11 "Install Python 3.11 (e.g. 'apt install python3.11 python3.11-venv' or pyenv)."
  _need java "Install Java 17 (e.g. 'apt install openjdk-17-jre-headless'), or set KAFKAML_BOOTSTRAP to an existing Kafka cluster."
  _need mvn "Install Maven (e.g. 'apt install maven'), or set KAFKAML_BOOTSTRAP to an existing Kafka cluster."

  mkdir -p "$_kml_cache"
  _lock_hash="$(sha256sum "$_kml_root/requirements/lock.txt" | cut -c1-16)"
  # One setup at a time per machine: two clones may share the environment.
  exec 9>"$_kml_cache/setup.lock"
  flock 9
  if [ ! -x "$KAFKAML_VENV/bin/python" ]; then
    echo "kafkaml-ray setup: creating $KAFKAML_VENV" >&2
    rm -rf "$KAFKAML_VENV"
    python3.11 -m venv "$KAFKAML_VENV"
  fi
  if [ "$(cat "$KAFKAML_VENV/.lock-hash" 2>/dev/null)" != "$_lock_hash" ]; then
    echo "kafkaml-ray setup: installing requirements/lock.txt (the first time downloads PyTorch, TensorFlow and Ray: several GB)" >&2
    "$KAFKAML_VENV/bin/python" -m pip install -q --upgrade pip
    "$KAFKAML_VENV/bin/python" -m pip install -q -r "$_kml_root/requirements/lock.txt"
    echo "$_lock_hash" > "$KAFKAML_VENV/.lock-hash"
  fi
  # This checkout, editable, without dependencies (they come from the lock above).
  PYTHONWARNINGS=ignore "$KAFKAML_VENV/bin/python" -m pip install -q --no-deps --no-build-isolation -e "$_kml_root" >/dev/null
); then
  unset _kml_root _kml_cache
  return 1 2>/dev/null || exit 1
fi
unset _kml_root _kml_cache
export KAFKAML_PYTHON="$KAFKAML_VENV/bin/python"
export PATH="$KAFKAML_VENV/bin:$PATH"
