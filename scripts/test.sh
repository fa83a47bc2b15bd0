#!/usr/bin/env bash
# The test command: install what is missing, build Sluice and the example functions, run
# every test. Integration tests start their own servers per test: nats-server, SeaweedFS
# (S3), tansu (Kafka) and mosquitto (MQTT); the Lambda tests use the runtime clients that
# `sluice build` installs into .sluice/tools/lambda.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/setup.sh
. scripts/setup-test.sh
echo "test: building sluice (first build on a fresh machine: ~20 min on 2 cores)" >&2
cargo build --bin sluice
echo "test: building the example functions (sluice build)" >&2
"${CARGO_TARGET_DIR:-$root/target}/debug/sluice" build
cargo test --no-fail-fast "$@"
