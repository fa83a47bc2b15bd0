#!/usr/bin/env bash
# Mutation testing with cargo-mutants: breaks the code that carries Sluice's guarantees on
# purpose, one small change at a time, and checks that a test fails for each. CI runs the
# ordinary suite only; run this by hand (results in .sluice/mutants/<group>/mutants.out/).
#
# Usage: scripts/mutants.sh GROUP [-- EXTRA cargo-mutants ARGS]
#   GROUP: dispatch | bus | dlq | event | triggers | FILE.rs
# Each group mutates a few files and runs only the tests that exercise them. A mutant costs
# about 70 s on 2 cores (dispatch: 79 mutants, ~1.5 h); narrow a run with cargo-mutants'
# --file / -e after `--`. cargo-mutants 27.1.0 is installed into $SLUICE_TOOLS_CACHE
# (default ~/.cache/sluice/tools) on first use (about 3 minutes).
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

usage() { sed -n '5,7p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
[ $# -ge 1 ] || usage
group=$1; shift
[ "${1:-}" != "--" ] || shift

MUTANTS_VERSION=27.1.0
SLUICE_TOOLS_CACHE=${SLUICE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/tools}
mutants="$SLUICE_TOOLS_CACHE/cargo-mutants-$MUTANTS_VERSION/bin/cargo-mutants"
if [ ! -x "$mutants" ]; then
  echo "mutants: installing cargo-mutants $MUTANTS_VERSION into $SLUICE_TOOLS_CACHE (once per machine, ~3 min)" >&2
  CARGO_TARGET_DIR="$SLUICE_TOOLS_CACHE/cargo-mutants-build" cargo install cargo-mutants --version "$MUTANTS_VERSION" \
    --locked --root "$SLUICE_TOOLS_CACHE/cargo-mutants-$MUTANTS_VERSION" >&2
  rm -rf "$SLUICE_TOOLS_CACHE/cargo-mutants-build"
fi

# Files to mutate and the tests that guard them (unit tests always run).
case "$group" in
  dispatch) files=(src/dispatch/mod.rs src/dispatch/retry.rs src/dispatch/dlq.rs)
            tests=(e2e_dlq e2e_retry e2e_crash e2e_last_attempt_crash e2e_dlq_write_failure e2e_shutdown e2e_shutdown_bounded e2e_fanout e2e_large_payload e2e_chaining e2e_chaining_store_failure e2e_progress_ack e2e_consumer_update dlq_replay) ;;
  bus)      files=(src/bus/mod.rs src/bus/payload.rs src/bus/embedded.rs)
            tests=(chaos_stream_settings chaos_embedded_nats embedded_nats e2e_large_payload e2e_dedup e2e_fanout e2e_consumer_update config_precedence) ;;
  dlq)      files=(src/dlq/mod.rs src/cli/dlq.rs)
            tests=(dlq_inspect dlq_replay dlq_bulk dlq_replay_interrupted dlq_replay_rate dlq_purge_filters e2e_large_payload) ;;
  event)    files=(src/event.rs)
            tests=(e2e_fanout e2e_plain_nats e2e_dedup fuzz_event) ;;
  triggers) files=(src/triggers/kafka.rs src/triggers/nats.rs src/triggers/mqtt.rs src/triggers/postgres/mod.rs src/triggers/bucket/state.rs src/triggers/cron/mod.rs)
            tests=(source_kafka source_nats source_mqtt source_postgres bucket_local bucket_s3 cron_missed cron_two_workers) ;;
  *.rs)     [ -f "$group" ] || { echo "mutants: no file $group" >&2; exit 2; }
            files=("$group"); tests=() ;;
  *)        echo "mutants: unknown group $group" >&2; usage ;;
esac

# The servers and example functions the tests need, as scripts/test.sh sets them up.
. scripts/setup.sh
. scripts/setup-test.sh
scripts/build-functions.sh

args=()
for file in "${files[@]}"; do args+=(--file "$file"); done
test_args=()
if [ ${#tests[@]} -gt 0 ]; then
  test_args=(--cargo-test-arg=--lib)
  for test in "${tests[@]}"; do test_args+=(--cargo-test-arg=--test "--cargo-test-arg=$test"); done
fi

out="$root/.sluice/mutants/$(basename "$group" .rs)"
mkdir -p "$out"
echo "mutants: $group: mutating ${files[*]}; tests: unit + ${tests[*]:-all}; results in $out/mutants.out" >&2
# One job: the integration tests start servers on free ports and use both cores already.
# A mutant that only times out counts as caught by cargo-mutants but not by this project's
# standard (an assertion must fail): read timeout.txt and add an assertion for each.
exec "$mutants" mutants --no-shuffle --jobs 1 --timeout-multiplier 3 --output "$out" "${args[@]}" "${test_args[@]}" "$@"
