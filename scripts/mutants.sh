#!/usr/bin/env bash
# Mutation testing with cargo-mutants: breaks the code that carries Sluice's guarantees on
# purpose, one small change at a time, and checks that a test fails for each. CI runs the
# ordinary suite only; run this by hand (results in .sluice/mutants/<group>/mutants.out/).
#
# Usage: scripts/mutants.sh GROUP [-- EXTRA cargo-mutants ARGS]
#   GROUP: dispatch | bus | dlq | event | triggers | lambda | FILE.rs (a file of the table below
#   runs with its own tests; any other file with every test)
# Each group mutates a few files, each with only the tests that exercise it (a mutant costs
# an incremental build of those test binaries plus their run: 20 s to 2 min on 2 cores).
# Narrow a run with cargo-mutants' --re / -e after `--`. cargo-mutants 27.1.0 is installed
# into $SLUICE_TOOLS_CACHE (default ~/.cache/sluice/tools) on first use (about 3 minutes).
# Exit status 0 when every mutant was caught or unviable.
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

# What each group mutates, one row per file: "GROUP;FILE;TESTS;REGEX;ARGS". Each file runs
# with the unit tests and only the integration tests that exercise it; REGEX (optional)
# keeps the mutants of the named functions only (the cursor and ack code of a trigger);
# ARGS are extra cargo-mutants options (a longer timeout where the tests' own deadlines
# exceed three times the unmutated run, so a hanging mutant fails on an assertion).
all=(
  "dispatch;src/dispatch/retry.rs;e2e_retry e2e_dlq;"
  "dispatch;src/dispatch/dlq.rs;e2e_dlq e2e_dlq_write_failure e2e_last_attempt_crash dlq_replay;"
  "dispatch;src/dispatch/mod.rs;e2e_dlq e2e_retry e2e_shutdown e2e_dlq_write_failure e2e_chaining_store_failure e2e_chaining e2e_progress_ack e2e_consumer_update e2e_large_payload e2e_last_attempt_crash e2e_crash e2e_shutdown_bounded e2e_fanout;"
  "bus;src/bus/mod.rs;chaos_stream_settings config_precedence e2e_dedup e2e_fanout e2e_consumer_update e2e_dlq chaos_nats_outage cron_cursor dlq_bulk;"
  "bus;src/bus/payload.rs;e2e_large_payload;;--timeout 150"
  "bus;src/bus/embedded.rs;embedded_nats chaos_embedded_nats;;--timeout 150"
  "dlq;src/dlq/mod.rs;dlq_inspect dlq_purge_filters dlq_replay dlq_bulk dlq_replay_rate e2e_large_payload dlq_replay_interrupted;"
  "dlq;src/cli/dlq.rs;dlq_inspect dlq_purge_filters dlq_replay dlq_bulk dlq_replay_rate dlq_replay_interrupted dlq_terminal;"
  "event;src/event.rs;fuzz_event e2e_plain_nats e2e_fanout e2e_dedup e2e_chaining;"
  "triggers;src/triggers/kafka.rs;source_kafka;[ :](consume)( ->|$)"
  "triggers;src/triggers/nats.rs;source_nats;[ :](core|jetstream)( ->|$)"
  "triggers;src/triggers/mqtt.rs;source_mqtt;[ :](run_loop|publish_until_acked)( ->|$)"
  "triggers;src/triggers/postgres/mod.rs;source_postgres;[ :](stream|record|read)( ->|$);--timeout 240"
  "triggers;src/triggers/bucket/state.rs;bucket_local bucket_s3;;--timeout 180"
  "triggers;src/triggers/cron/mod.rs;cron_missed cron_two_workers cron_cursor;[ :](run_loop|fire|read_last|record_last)( ->|$)"
  "lambda;src/runtime/lambda/api.rs;lambda_handlers lambda_errors lambda_limits;"
  "lambda;src/runtime/lambda/env.rs;lambda_handlers lambda_limits lambda_kill lambda_errors;;--timeout 180"
  "lambda;src/runtime/lambda/mod.rs;lambda_handlers lambda_concurrency lambda_limits lambda_errors lambda_scaling lambda_kill;;--timeout 180"
)
entries=()
out_group=$(basename "$group" .rs)
for row in "${all[@]}"; do
  # A group name takes its files; a file of the table runs alone, with its own tests.
  if [ "${row%%;*}" = "$group" ] || [ "$(echo "$row" | cut -d';' -f2)" = "$group" ]; then
    entries+=("${row#*;}")
    out_group=${row%%;*}
  fi
done
if [ ${#entries[@]} -eq 0 ]; then
  case "$group" in
    *.rs) [ -f "$group" ] || { echo "mutants: no file $group" >&2; exit 2; }
          entries=("$group;;") ;;
    *)    echo "mutants: unknown group $group" >&2; usage ;;
  esac
fi

# The servers and example functions the tests need, as scripts/test.sh sets them up.
. scripts/setup.sh
. scripts/setup-test.sh
cargo build --bin sluice
"${CARGO_TARGET_DIR:-$root/target}/debug/sluice" build

out="$root/.sluice/mutants/$out_group"
# cargo-mutants builds in a copy of the tree: a fixed target folder keeps the dependencies
# built across mutants and runs.
export CARGO_TARGET_DIR="${SLUICE_MUTANTS_TARGET:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/mutants-target}"
count() { if [ -f "$1/mutants.out/$2.txt" ]; then wc -l <"$1/mutants.out/$2.txt"; else echo 0; fi; }
summary=()
missed=0
for entry in "${entries[@]}"; do
  IFS=';' read -r file tests regex extra <<<"$entry"
  args=(--file "$file")
  # shellcheck disable=SC2206 # ARGS are words
  [ -z "$extra" ] || args+=($extra)
  [ -z "$regex" ] || args+=(--re "$regex")
  if [ -n "$tests" ]; then
    args+=(--cargo-arg=--lib)
    for test in $tests; do args+=(--cargo-arg=--test "--cargo-arg=$test"); done
  fi
  dir="$out/$(echo "${file#src/}" | sed 's/\.rs$//; s|/|-|g')"
  mkdir -p "$dir"
  echo "mutants: $file${regex:+ (functions matching $regex)}; tests: unit + ${tests:-all}; results in $dir/mutants.out" >&2
  # One job: the integration tests start servers on free ports and use both cores already.
  status=0
  case " ${args[*]} " in *" --timeout "*) ;; *) args+=(--timeout-multiplier 3) ;; esac
  "$mutants" mutants --no-shuffle --jobs 1 --output "$dir" "${args[@]}" "$@" || status=$?
  # 2: some mutants missed, 3: some timed out; anything else (4: the unmutated tests fail)
  # makes every result meaningless.
  case $status in 0|2|3) ;; *) echo "mutants: cargo-mutants failed on $file (exit $status); see $dir/mutants.out" >&2; exit "$status" ;; esac
  summary+=("$file: caught $(count "$dir" caught), missed $(count "$dir" missed), timeout $(count "$dir" timeout), unviable $(count "$dir" unviable)")
  missed=$((missed + $(count "$dir" missed) + $(count "$dir" timeout)))
done
# A mutant that only times out counts as caught by cargo-mutants but not by this project's
# standard (an assertion must fail): read timeout.txt and add an assertion for each.
echo "mutants: summary" >&2
printf '  %s\n' "${summary[@]}" >&2
[ "$missed" -eq 0 ]
