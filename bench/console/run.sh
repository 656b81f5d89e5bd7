#!/usr/bin/env bash
# The console's tenants page with 10,000 tenants, in the production configuration (Postgres
# registry and ledger): how long the page takes to answer, first page, a deep page, a search
# and each filter, with 30 days of hourly usage rollups for every tenant. See bench/README.md
# ("Console").
#
#   bench/console/run.sh [tenants] [requests]          # defaults: 10000 200
#
# Environment: BENCH_SKIP_BUILD=1 uses $CARGO_TARGET_DIR/release/bulkhead as it is;
# BENCH_POSTGRES (default postgres://postgres@127.0.0.1:5432): a fresh database is made there
# and dropped on exit. Needs psql, curl and python3. Traffic goes only to 127.0.0.1; every
# process it starts is stopped on exit.
set -euo pipefail

TENANTS="${1:-10000}"
REQUESTS="${2:-200}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
SERVER="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
for tool in psql curl python3; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p bulkhead-api --bin bulkhead) >&2
fi

WORK="$(mktemp -d /tmp/bulkhead-console-bench.XXXXXX)"
DB="bulkhead_bench_console_$$"
PID=""
cleanup() {
  local status=$?
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null || true
  [ -n "$PID" ] && wait "$PID" 2>/dev/null || true
  psql -q "$SERVER/postgres" -c "DROP DATABASE IF EXISTS $DB WITH (FORCE)" >/dev/null 2>&1 || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT INT TERM

psql -q "$SERVER/postgres" -c "CREATE DATABASE $DB" >/dev/null
TOKEN="bench-admin-token-$$"
PORT=18480
BULKHEAD_LISTEN="127.0.0.1:$PORT" DATABASE_URL="$SERVER/$DB" BULKHEAD_DATA_DIR="$WORK" \
  BULKHEAD_ADMIN_TOKEN="$TOKEN" BULKHEAD_JWT_SECRET="bench-jwt-secret-0123456789abcdef" \
  BULKHEAD_MASTER_KEY="MDEyMzQ1Njc4OWFiY2RlZjAxMjM0NTY3ODlhYmNkZWY=" BULKHEAD_LOG=warn \
  "$TARGET_DIR/release/bulkhead" >"$WORK/gateway.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -sf "http://127.0.0.1:$PORT/readyz" >/dev/null && break; sleep 0.1; done

python3 "$HERE/console.py" "http://127.0.0.1:$PORT" "$TOKEN" "$TENANTS" "$REQUESTS" "$SERVER/$DB"
