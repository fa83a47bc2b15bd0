#!/usr/bin/env bash
# The run command: install what is missing, build Sluice and the example functions, and
# start `sluice up` in the repository root (with an embedded NATS server unless one is
# configured through --nats, SLUICE_NATS_URL or sluice.toml). Extra arguments go to `up`.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
. scripts/setup.sh
# Cargo shows its progress on stderr; a fresh machine compiles every dependency once
# (wasmtime, librdkafka, ...), later builds take seconds.
echo "run: building sluice (first build on a fresh machine: ~20 min on 2 cores; later builds seconds)" >&2
cargo build --bin sluice
bin="${CARGO_TARGET_DIR:-$root/target}/debug/sluice"
# The example functions: wasm crates with cargo, the Lambda runtime clients with pip and npm
# (the first time a few minutes; later it skips what is up to date).
echo "run: building the example functions (sluice build)" >&2
"$bin" build
echo "sluice is at $bin; in another terminal: $bin publish greetings --data '{\"name\":\"Alice\"}'" >&2
exec "$bin" up "$@"
