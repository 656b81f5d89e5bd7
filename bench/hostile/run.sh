#!/usr/bin/env bash
# Liveness under worst-case token counting: 4 clients send 1 MB chat bodies that made the old
# tokenizer quadratic (one letter repeated, random letters, mixed scripts) to /v1/tokenize
# without pause, while /healthz is probed every 10 ms on a fresh connection. Reports the
# probes' p50 / p99 / max and how long each worst-case count took. See bench/README.md.
#
#   bench/hostile/run.sh [duration-seconds]        # default 20
#
# Environment: BENCH_SKIP_BUILD=1 uses $CARGO_TARGET_DIR/release/bulkhead as it is.
# Needs curl and python3. Traffic goes only to 127.0.0.1; everything started is stopped.
set -euo pipefail

DURATION="${1:-20}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p bulkhead-api --bin bulkhead) >&2
fi

WORK="$(mktemp -d /tmp/bulkhead-hostile-bench.XXXXXX)"
PID=""
cleanup() {
  local status=$?
  [ -n "$PID" ] && kill -KILL "$PID" 2>/dev/null || true
  rm -rf "$WORK"
  exit "$status"
}
trap cleanup EXIT INT TERM

PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
ADMIN=bench-admin-token-0123456789
BULKHEAD_DATA_DIR="$WORK/data" BULKHEAD_ADMIN_TOKEN="$ADMIN" BULKHEAD_LISTEN="127.0.0.1:$PORT" \
  BULKHEAD_LOG=warn "$TARGET_DIR/release/bulkhead" >"$WORK/gateway.log" 2>&1 &
PID=$!
for _ in $(seq 1 100); do curl -fs "127.0.0.1:$PORT/healthz" >/dev/null 2>&1 && break; sleep 0.1; done

export BASE="http://127.0.0.1:$PORT" ADMIN="$ADMIN" DURATION="$DURATION"
# The probe runs in a process of its own (not behind the load generator's GIL); the load
# generator runs niced, so that the figures are the gateway's, not the client's.
python3 "$HERE/hostile.py" setup >"$WORK/key"
export KEY="$(cat "$WORK/key")"
nice -n 10 python3 "$HERE/hostile.py" load >"$WORK/load.txt" &
LOAD=$!
python3 "$HERE/hostile.py" probe
wait "$LOAD"
cat "$WORK/load.txt"
