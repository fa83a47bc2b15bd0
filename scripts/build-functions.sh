#!/usr/bin/env bash
# Builds the example functions (functions/*) to wasm32-wasip1 and puts each artifact in its
# function's folder, where function.toml's `module` points.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
target_dir="${CARGO_TARGET_DIR:-$root/target}/functions"
cd "$root/functions"
echo "build-functions: building the example functions (functions/*) for wasm32-wasip1" \
  "(the first time a minute or two on 2 cores; later seconds)" >&2
CARGO_TARGET_DIR="$target_dir" cargo build --release --target wasm32-wasip1
for dir in "$root"/functions/*/; do
  name=$(basename "$dir")
  artifact="$target_dir/wasm32-wasip1/release/$name.wasm"
  if [ -f "$dir/Cargo.toml" ] && [ -f "$artifact" ]; then
    cp "$artifact" "$dir/$name.wasm"
  fi
done
echo "built: $(cd "$root" && ls functions/*/*.wasm | tr '\n' ' ')" >&2
