#!/usr/bin/env bash
# The test command: install what is missing, build the example functions, run every test.
# Integration tests start their own servers per test: nats-server, SeaweedFS (S3), tansu
# (Kafka) and mosquitto (MQTT).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/setup.sh
. scripts/setup-test.sh
scripts/build-functions.sh
cargo test --no-fail-fast "$@"
