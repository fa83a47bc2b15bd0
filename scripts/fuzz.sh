#!/usr/bin/env bash
# Fuzzes the decoders: runs each property-test target (tests/fuzz_*.rs) for a fixed time,
# over and over with a fresh random seed and many cases per run, and stops at the first
# failure with the failing input and the command that replays it.
#
# Usage: scripts/fuzz.sh [SECONDS] [TARGET...]
#   SECONDS   time per target, default 60
#   TARGET    fuzz_event, fuzz_config, fuzz_schedule, fuzz_records (default: all)
# Environment: FUZZ_MAX_CASES caps the cases of one run (default 50000).
# Exit code: 0 when every property held, 1 on a failure, 2 on bad usage.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"

seconds=${1:-60}
if ! [[ "$seconds" =~ ^[1-9][0-9]*$ ]]; then
  echo "usage: scripts/fuzz.sh [SECONDS] [TARGET...]  (SECONDS: a whole number of seconds per target)" >&2
  exit 2
fi
[ $# -gt 0 ] && shift
if [ $# -gt 0 ]; then
  targets=("$@")
else
  targets=()
  for file in tests/fuzz_*.rs; do targets+=("$(basename "$file" .rs)"); done
fi
for target in "${targets[@]}"; do
  if [ ! -f "tests/$target.rs" ]; then
    echo "fuzz: no target $target (tests/$target.rs); the targets are: $(cd tests && ls fuzz_*.rs | sed 's/\.rs$//' | tr '\n' ' ')" >&2
    exit 2
  fi
done
max_cases=${FUZZ_MAX_CASES:-50000}

# The same set-up as scripts/test.sh: cmake and libcurl's headers for the Kafka client.
. scripts/setup.sh

now_ms() { date +%s%3N; }
log=$(mktemp)
trap 'rm -f "$log"' EXIT

for target in "${targets[@]}"; do
  echo "fuzz: building $target" >&2
  bin=$(cargo test --test "$target" --no-run 2>&1 | tee "$log" | sed -n 's/.*Executable .*(\(.*\))$/\1/p' | tail -n 1)
  if [ -z "$bin" ] || [ ! -x "$bin" ]; then
    cat "$log" >&2
    echo "fuzz: cannot build $target" >&2
    exit 1
  fi
  properties=$("$bin" --list 2>/dev/null | grep -c ': test$' || true)
  start=$(now_ms)
  deadline=$((start + seconds * 1000))
  cases=100  # the first run measures the speed; later ones aim at ~20 s each
  total=0
  runs=0
  while [ "$(now_ms)" -lt "$deadline" ]; do
    seed=$(od -An -N8 -tu8 /dev/urandom | tr -d ' ')
    run_start=$(now_ms)
    if ! PROPTEST_CASES=$cases PROPTEST_RNG_SEED=$seed "$bin" --test-threads 2 >"$log" 2>&1; then
      echo "fuzz: $target FAILED in run $((runs + 1)) (seed $seed, $cases cases per property)" >&2
      # libtest prints each failing test's output between two "failures:" lines.
      awk '/^failures:$/ { n++; next } n == 1' "$log" >&2
      grep -q '^failures:$' "$log" || tail -n 60 "$log" >&2
      echo "fuzz: replay with: PROPTEST_CASES=$cases PROPTEST_RNG_SEED=$seed cargo test --test $target" >&2
      exit 1
    fi
    run_ms=$(( $(now_ms) - run_start ))
    runs=$((runs + 1))
    total=$((total + cases))
    left_ms=$((deadline - $(now_ms)))
    [ "$left_ms" -lt 0 ] && left_ms=0
    echo "fuzz: $target: run $runs (seed $seed): $cases cases in $((run_ms / 1000)).$(printf %03d $((run_ms % 1000)))s; $total cases per property so far, $((left_ms / 1000))s left" >&2
    # Next run: as many cases as fit in min(20 s, time left) at this run's speed.
    aim_ms=$(( left_ms < 20000 ? left_ms : 20000 ))
    cases=$(( cases * aim_ms / (run_ms > 0 ? run_ms : 1) ))
    [ "$cases" -lt 10 ] && cases=10
    [ "$cases" -gt "$max_cases" ] && cases=$max_cases
  done
  elapsed_ms=$(( $(now_ms) - start ))
  echo "fuzz: $target held: $properties tests, $total cases per property in $runs runs, $((elapsed_ms / 1000))s" >&2
done
