#!/usr/bin/env bash
# Sets up what is missing, then runs the main job end to end on embedded defaults:
#   bash scripts/demo.sh
# (local Kafka broker, local Ray, SQLite and artifacts under $KAFKAML_HOME, ~/.kafkaml-ray)
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/setup.sh
exec kafkaml-ray demo "$@"
