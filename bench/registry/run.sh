#!/usr/bin/env bash
# The registry at scale, in the production configuration (Postgres): admin writes per second
# as tenants accumulate, memory of the writing replica and of another one, how soon a change
# made on one replica is served by the other while writes run, how long a cold replica takes
# to serve, and the data plane's latency with few and with many tenants. See
# bench/README.md ("Registry at scale").
#
#   bench/registry/run.sh [tenants] [writers]          # defaults: 10000 8
#
# Environment: BENCH_SKIP_BUILD=1 uses $CARGO_TARGET_DIR/release/bulkhead as it is;
# BENCH_POSTGRES (default postgres://postgres@127.0.0.1:5432): a fresh database is made there
# and dropped on exit. Needs psql, curl, python3 and oha. Traffic goes only to 127.0.0.1;
# every process it starts is stopped on exit.
set -euo pipefail

TENANTS="${1:-10000}"
WRITERS="${2:-8}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVER="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
for tool in psql curl python3 oha; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p bulkhead-api --bin bulkhead) >&2
fi

WORK="$(mktemp -d /tmp/bulkhead-registry-bench.XXXXXX)"
DB="bulkhead_bench_registry_$$"
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT INT TERM
psql -q "$SERVER/postgres" -c "CREATE DATABASE $DB" >/dev/null

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
MASTER="$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')"
ADMIN="bench-admin-token-0123456789"

# Starts a replica; prints "pid port".
start_replica() {
  local port
  port="$(free_port)"
  DATABASE_URL="$SERVER/$DB" BULKHEAD_MASTER_KEY="$MASTER" BULKHEAD_ADMIN_TOKEN="$ADMIN" \
    BULKHEAD_LISTEN="127.0.0.1:$port" BULKHEAD_DATA_DIR="$WORK/data-$port" BULKHEAD_LOG=warn \
    "$TARGET_DIR/release/bulkhead" >"$WORK/replica-$port.log" 2>&1 &
  echo "$! $port"
}

read -r PID_A PORT_A < <(start_replica)
PIDS+=("$PID_A")
read -r PID_B PORT_B < <(start_replica)
PIDS+=("$PID_B")
for port in "$PORT_A" "$PORT_B"; do
  for _ in $(seq 1 200); do curl -sf "127.0.0.1:$port/readyz" >/dev/null && break; sleep 0.05; done
done

export A="http://127.0.0.1:$PORT_A" B="http://127.0.0.1:$PORT_B" PID_A PID_B ADMIN TENANTS WRITERS
python3 "$HERE/registry.py" scale

# A cold replica on the full registry: time to ready and to serving a key, and its memory.
STARTED="$(python3 -c 'import time; print(time.monotonic())')"
read -r PID_C PORT_C < <(start_replica)
PIDS+=("$PID_C")
export C="http://127.0.0.1:$PORT_C" PID_C STARTED
python3 "$HERE/registry.py" cold
