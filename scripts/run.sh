#!/usr/bin/env bash
# The run command: install what is missing, build Sluice and the example functions, and
# start `sluice up` in the repository root (with an embedded NATS server unless one is
# configured through --nats, SLUICE_NATS_URL or sluice.toml). Extra arguments go to `up`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/setup.sh
scripts/build-functions.sh
cargo build --quiet --bin sluice
bin="${CARGO_TARGET_DIR:-$root/target}/debug/sluice"
echo "sluice is at $bin; in another terminal: $bin publish greetings --data '{\"name\":\"Alice\"}'" >&2
exec "$bin" up "$@"
