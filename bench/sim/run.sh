#!/usr/bin/env bash
# Load test of azure-sim: plain (non-streaming) chat completions with wrk.
#
#   bench/sim/run.sh [duration] [connections] [wrk threads] [script]
#
# script: chat.lua (default; plain chat completions) or stream.lua (streaming, 64 tokens).
# Builds the release binary (CARGO_TARGET_DIR is honoured), starts it on a free port with
# bench/sim/bench.json (request log disabled), runs wrk with bench/sim/chat.lua, stops it.
# Needs wrk (`apt-get install -y wrk`).
set -euo pipefail

DURATION="${1:-15s}"
CONNECTIONS="${2:-64}"
THREADS="${3:-1}"
SCRIPT="${4:-chat.lua}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET="${CARGO_TARGET_DIR:-$ROOT/target}"

cargo build --release -p azure-sim --manifest-path "$ROOT/Cargo.toml" >&2
WORK="$(mktemp -d)"
"$TARGET/release/azure-sim" --listen 127.0.0.1:0 --config "$HERE/bench.json" \
  --ready-file "$WORK/ready" 2>"$WORK/sim.log" &
SIM_PID=$!
trap 'kill "$SIM_PID" 2>/dev/null || true; rm -rf "$WORK"' EXIT
for _ in $(seq 1 200); do [ -s "$WORK/ready" ] && break; sleep 0.05; done
ADDR="$(cat "$WORK/ready")"
URL="http://$ADDR/r/aoai-bench/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"

# A correctness check before measuring.
curl -fsS -o /dev/null -H 'api-key: bench-key' -H 'content-type: application/json' \
  -d '{"messages":[{"role":"user","content":"ping"}]}' "$URL"

echo "wrk -t$THREADS -c$CONNECTIONS -d$DURATION -s $SCRIPT"
wrk -t"$THREADS" -c"$CONNECTIONS" -d"$DURATION" --latency -s "$HERE/$SCRIPT" "$URL"
