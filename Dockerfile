# syntax=docker/dockerfile:1
# One image, two binaries: `bulkhead` (the gateway, built without the in-process emulator)
# and `azure-sim` (the Azure emulator, for staging and local stacks). Runs as uid/gid 10001
# (numeric, so Kubernetes' runAsNonRoot can verify it) with nothing writable but its data
# directories.
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
# The registry and target caches survive between builds (BuildKit cache mounts), so a change
# to the source recompiles the workspace, not its dependencies.
RUN --mount=type=cache,target=/usr/local/cargo/registry \
    --mount=type=cache,target=/usr/local/cargo/git \
    --mount=type=cache,target=/src/target \
    cargo build --release --locked -p bulkhead-api --no-default-features --bin bulkhead \
 && cargo build --release --locked -p azure-sim --bin azure-sim \
 && cp target/release/bulkhead target/release/azure-sim /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --system --gid 10001 bulkhead \
 && useradd --system --uid 10001 --gid 10001 --no-create-home bulkhead \
 && mkdir -p /var/lib/bulkhead /var/lib/azure-sim \
 && chown 10001:10001 /var/lib/bulkhead /var/lib/azure-sim
COPY --from=build /usr/local/bin/bulkhead /usr/local/bin/azure-sim /usr/local/bin/
COPY deploy/azure-sim.json /etc/azure-sim/config.json
USER 10001:10001
ENV BULKHEAD_LISTEN=0.0.0.0:8080 BULKHEAD_DATA_DIR=/var/lib/bulkhead
VOLUME ["/var/lib/bulkhead"]
EXPOSE 8080
HEALTHCHECK CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["bulkhead"]
