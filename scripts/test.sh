#!/usr/bin/env bash
# Sets up what is missing, then runs the test suite:  bash scripts/test.sh [pytest args]
#
# Integration tests start a real embedded Kafka broker and a real local Ray head of their
# own (free ports, a temporary KAFKAML_HOME), under an empty HOME. Store tests also run on
# PostgreSQL: this script starts a private PostgreSQL server when the Debian packages are
# installed and KAFKAML_TEST_POSTGRES is not set (.ci/run installs them).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh

# The tests run as on a new user's machine: HOME is an empty temporary directory (no Ray
# token, no ~/.kafkaml-ray, no caches). The big downloads are passed in explicitly: the
# shared environment (already on PATH) and the Maven repository.
_home="$(mktemp -d /tmp/kml-home-XXXXXX)"
case "${MAVEN_OPTS:-}" in
  *maven.repo.local*) ;;
  *) export MAVEN_OPTS="${MAVEN_OPTS:-} -Dmaven.repo.local=$HOME/.m2/repository" ;;
esac
export HOME="$_home" XDG_CACHE_HOME="$_home/.cache"
unset RAY_ADDRESS RAY_AUTH_TOKEN RAY_AUTH_TOKEN_PATH KAFKAML_HOME

_pg_dir=""
_cleanup() {
  if [ -n "$_pg_dir" ]; then
    _pg_run "$_pg_bin/pg_ctl" -D "$_pg_dir/data" -m fast stop >/dev/null 2>&1 || true
    rm -rf "$_pg_dir"
  fi
  rm -rf "$_home"
}
trap _cleanup EXIT

_pg_run() {  # PostgreSQL refuses to run as root: run its programs as the postgres user then
  if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi
}

_pg_bin="$(ls -d /usr/lib/postgresql/*/bin 2>/dev/null | sort -V | tail -n 1 || true)"
if [ -z "${KAFKAML_TEST_POSTGRES:-}" ] && [ -n "$_pg_bin" ] && [ -x "$_pg_bin/initdb" ]; then
  _pg_dir="$(mktemp -d /tmp/kml-pg-XXXXXX)"
  chmod 755 "$_pg_dir"
  [ "$(id -u)" = 0 ] && chown postgres "$_pg_dir"
  _pg_port="$("$KAFKAML_PYTHON" -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')"
  _pg_run "$_pg_bin/initdb" -D "$_pg_dir/data" -U kafkaml --auth=trust >/dev/null
  # Its settings in its own configuration, so that a plain `pg_ctl start` brings it back
  # the same (the fault tests stop and start it under a running listener).
  printf "port = %s\nunix_socket_directories = '%s'\nlisten_addresses = '127.0.0.1'\n" \
    "$_pg_port" "$_pg_dir" | _pg_run tee -a "$_pg_dir/data/postgresql.conf" >/dev/null
  _pg_run "$_pg_bin/pg_ctl" -D "$_pg_dir/data" -l "$_pg_dir/log" -w start >/dev/null
  _pg_run "$_pg_bin/createdb" -h 127.0.0.1 -p "$_pg_port" -U kafkaml kafkaml_test
  export KAFKAML_TEST_POSTGRES="postgresql+psycopg://kafkaml@127.0.0.1:$_pg_port/kafkaml_test"
  export KAFKAML_TEST_POSTGRES_DATA="$_pg_dir/data"  # to stop and start it: tests/test_faults.py
  echo "test.sh: PostgreSQL for the store tests on 127.0.0.1:$_pg_port" >&2
elif [ -z "${KAFKAML_TEST_POSTGRES:-}" ]; then
  echo "test.sh: PostgreSQL is not installed: the store tests on PostgreSQL are skipped" >&2
fi

"$KAFKAML_PYTHON" -m ruff check kafkaml_ray tests benchmarks examples
# The layers of pyproject.toml's [tool.importlinter] contracts, and no import circles.
"$KAFKAML_VENV/bin/lint-imports" --no-cache
"$KAFKAML_PYTHON" -m pytest "$@"
