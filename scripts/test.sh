#!/usr/bin/env bash
# The test command: install what is missing, build the example functions, run every test.
# Integration tests start their own nats-server per test (SLUICE_NATS_SERVER).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/setup.sh
scripts/build-functions.sh
cargo test --no-fail-fast "$@"
