#!/usr/bin/env bash
# Moving a tenant's documents: how fast a search move copies them, and what the tenant's
# searches pay while it does. One tenant with N documents (vector field included) in a shared
# index beside a neighbour, moved shared_index -> dedicated_index on azure-sim while a probe
# searches as the tenant at a fixed rate. See bench/README.md ("Moving a tenant").
#
#   bench/move/run.sh [documents] [dimensions] [probe-rate]      # defaults: 10000 64 20
#
# The gateway runs the production configuration when it can: a fresh Postgres database on
# $BENCH_POSTGRES (default postgres://postgres@127.0.0.1:5432/test's server, dropped on exit)
# and Redis quotas on $REDIS_URL if set; BENCH_EMBEDDED=1 uses the embedded SQLite store.
# BENCH_SKIP_BUILD=1 uses the binaries in $CARGO_TARGET_DIR/release as they are.
# Needs curl, python3 (and psql for Postgres). Traffic goes only to 127.0.0.1; everything it
# starts is stopped, and the database it made is dropped.
set -euo pipefail

DOCS="${1:-10000}"
DIMENSIONS="${2:-64}"
RATE="${3:-20}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
for tool in curl python3; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p bulkhead-api -p azure-sim --bins) >&2
fi

WORK="$(mktemp -d /tmp/bulkhead-move-bench.XXXXXX)"
PIDS=()
DB=""
SERVER="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
  [ -n "$DB" ] && psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $DB" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT INT TERM

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }

cat >"$WORK/sim.json" <<'JSON'
{"search_services": [{"name": "search-bench", "region": "eastus",
  "admin_keys": ["bench-admin-key"], "query_keys": ["bench-query-key"]}]}
JSON
"$TARGET_DIR/release/azure-sim" --listen 127.0.0.1:0 --config "$WORK/sim.json" \
  --ready-file "$WORK/sim.addr" >"$WORK/sim.log" 2>&1 &
SIM_PID=$!
PIDS+=($SIM_PID)
for _ in $(seq 1 100); do [ -s "$WORK/sim.addr" ] && break; sleep 0.05; done
SIM="http://$(cat "$WORK/sim.addr")"

STORE="embedded SQLite"
GATEWAY_ENV=(env -u DATABASE_URL)
if [ "${BENCH_EMBEDDED:-0}" != 1 ]; then
  command -v psql >/dev/null || { echo "missing: psql (or set BENCH_EMBEDDED=1)" >&2; exit 2; }
  DB="bulkhead_bench_move_$$"
  psql -q "$SERVER/postgres" -c "CREATE DATABASE $DB" >/dev/null
  GATEWAY_ENV=(env "DATABASE_URL=$SERVER/$DB"
    "BULKHEAD_MASTER_KEY=$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')")
  STORE="Postgres"
fi
[ -n "${REDIS_URL:-}" ] && STORE="$STORE, Redis quotas"

PORT="$(free_port)"
ADMIN="bench-admin-token-0123456789"
"${GATEWAY_ENV[@]}" BULKHEAD_LISTEN="127.0.0.1:$PORT" BULKHEAD_DATA_DIR="$WORK/gw" \
  BULKHEAD_ADMIN_TOKEN="$ADMIN" BULKHEAD_LOG=warn BULKHEAD_MOVE_SOURCE_GRACE_SECONDS=0 \
  "$TARGET_DIR/release/bulkhead" >"$WORK/gw.log" 2>&1 &
GATEWAY_PID=$!
PIDS+=($GATEWAY_PID)
GW="http://127.0.0.1:$PORT"
for _ in $(seq 1 200); do curl -sf "$GW/readyz" >/dev/null && break; sleep 0.05; done
curl -sf "$GW/readyz" >/dev/null || { cat "$WORK/gw.log" >&2; exit 1; }

echo "store: $STORE; $DOCS documents of $DIMENSIONS dimensions; probe $RATE searches/s"
BASE="$GW" SIM="$SIM" GATEWAY_PID="$GATEWAY_PID" SIM_PID="$SIM_PID" ADMIN="$ADMIN" DOCS="$DOCS" DIMENSIONS="$DIMENSIONS" RATE="$RATE" \
  python3 "$HERE/move.py"
