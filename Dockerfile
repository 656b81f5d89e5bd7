# Builds both binaries: `bulkhead` (the gateway) and `azure-sim` (the Azure emulator).
FROM rust:1.95-bookworm AS build
WORKDIR /src
COPY . .
RUN cargo build --release --locked --workspace --bins \
 && cp target/release/bulkhead target/release/azure-sim /usr/local/bin/

FROM debian:bookworm-slim
RUN apt-get update && apt-get install -y --no-install-recommends ca-certificates curl \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --system --uid 10001 bulkhead \
 && mkdir -p /var/lib/bulkhead /var/lib/azure-sim \
 && chown bulkhead /var/lib/bulkhead /var/lib/azure-sim
COPY --from=build /usr/local/bin/bulkhead /usr/local/bin/azure-sim /usr/local/bin/
COPY deploy/azure-sim.json /etc/azure-sim/config.json
USER bulkhead
ENV BULKHEAD_LISTEN=0.0.0.0:8080 BULKHEAD_DATA_DIR=/var/lib/bulkhead
EXPOSE 8080
HEALTHCHECK CMD curl -fsS http://127.0.0.1:8080/healthz || exit 1
ENTRYPOINT ["bulkhead"]
