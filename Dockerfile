# syntax=docker/dockerfile:1.7
#
# The `sluice` image: the binary (stripped) and the example project with its functions built,
# run as an unprivileged user. docker-compose.yml builds it; by hand:
#
#   docker build -t sluice .
#   docker run --rm -e SLUICE_NATS_URL=nats://nats.internal:4222 -p 8080:8080 sluice up
#
# The debug information stripped from the binary is kept in the `debug` stage, for
# symbolising a core dump or a profile:
#
#   docker build --target debug --output type=local,dest=debug .   # writes debug/sluice.debug
#
# NATS is not in the image: point Sluice at a nats-server 2.10 or newer with JetStream
# (docs/operations.md). tests/compose_file.rs checks the structure of this file.

ARG RUST_VERSION=1.95
# The example Lambda handler `hello-node` names runtime nodejs20.x, and Debian bookworm's
# nodejs package is 18: Node.js comes from the official image of that major.
ARG NODE_VERSION=20

FROM node:${NODE_VERSION}-bookworm-slim AS node

# ---------------------------------------------------------------------------------------------
# Builder: what scripts/setup.sh installs for a build, then `sluice` in release and the
# example functions with `sluice build`.
FROM rust:${RUST_VERSION}-bookworm AS builder

# cmake and libcurl's headers build librdkafka from source; python3 with pip installs the
# Python runtime interface client (awslambdaric) and componentize-py; autoconf, automake,
# libtool, make and g++ build the native module of Node's runtime interface client.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      cmake libcurl4-openssl-dev python3 python3-pip \
      autoconf automake libtool make g++ binutils \
 && rm -rf /var/lib/apt/lists/*
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules /usr/local/lib/node_modules
COPY --from=node /usr/local/include/node /usr/local/include/node
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && rustup target add wasm32-wasip1

WORKDIR /src
COPY . .

# The release build keeps line tables (Cargo.toml); the shipped binary is stripped and its
# debug information goes to sluice.debug, linked by name (gnu-debuglink).
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked --bin sluice \
 && mkdir -p /out \
 && objcopy --only-keep-debug target/release/sluice /out/sluice.debug \
 && objcopy --strip-debug --strip-unneeded target/release/sluice /out/sluice \
 && cd /out && objcopy --add-gnu-debuglink=sluice.debug sluice

# The example functions: Rust ones to .wasm modules, the Python and JavaScript handlers of
# the component examples to precompiled components, and the Lambda runtime interface
# clients into .sluice/tools/lambda/. The example project the image carries is then
# assembled in /srv/sluice: functions (sources and what was built), triggers, schemas, and
# the runtime interface clients, which the Lambda runtimes need when they run.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/src/.sluice/build \
    /out/sluice build \
 && mkdir -p /srv/sluice/.sluice/tools \
 && cp -a functions triggers schemas /srv/sluice/ \
 && cp -a .sluice/tools/lambda /srv/sluice/.sluice/tools/lambda \
 && rm -rf /srv/sluice/functions/target

# ---------------------------------------------------------------------------------------------
# Debug information only: `docker build --target debug --output type=local,dest=DIR .`
FROM scratch AS debug
COPY --from=builder /out/sluice.debug /sluice.debug

# ---------------------------------------------------------------------------------------------
# Runtime: what running needs. The binary links only libc, libm, libgcc_s and zlib (librdkafka
# is built into it); ca-certificates for TLS to NATS, S3, Kafka and PostgreSQL; python3 (3.11
# on bookworm) and node (20) for the Lambda runtimes.
FROM debian:bookworm-slim AS runtime

RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 sluice \
 && useradd --system --uid 10001 --gid sluice --home-dir /srv/sluice --no-create-home \
      --shell /usr/sbin/nologin sluice
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=builder /out/sluice /usr/local/bin/sluice
# The project is read-only for the user; it writes only under .sluice/ (the module cache,
# .sluice/cache, a volume in docker-compose.yml; artifacts fetched from the registry,
# .sluice/registry/) and buckets/ (local buckets).
COPY --from=builder /srv/sluice /srv/sluice
RUN mkdir -p /srv/sluice/.sluice/cache /srv/sluice/buckets \
 && chown sluice:sluice /srv/sluice/.sluice /srv/sluice/.sluice/cache /srv/sluice/buckets

USER 10001:10001
WORKDIR /srv/sluice
ENV SLUICE_DIR=/srv/sluice \
    SLUICE_HTTP_LISTEN=0.0.0.0:8080
EXPOSE 8080
# `sluice up` drains in-flight invocations on SIGTERM (docker stop); give it the longest
# function timeout + 10 s (docker stop --time, stop_grace_period in compose).
STOPSIGNAL SIGTERM
ENTRYPOINT ["sluice"]
CMD ["up"]
