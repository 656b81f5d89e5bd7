#!/usr/bin/env bash
# The admin API against its own OpenAPI document: schemathesis (from PyPI, in the SDK tests'
# virtualenv) generates valid and invalid requests for every documented operation and fails
# on any 5xx, any status code, content type or response body the document does not allow,
# and any request the document forbids that the gateway accepts. A fixed seed and example
# count keep it reproducible and under half a minute. Run by `make test` (target
# `test-contract`) after `cargo build --workspace --bins`.
set -euo pipefail
cd "$(dirname "$0")/../.."

VENV=${VENV:-.venv}
BINARY=${BULKHEAD_BINARY:-target/debug/bulkhead}
TOKEN=contract-admin-token-0123456789
dir=$(mktemp -d)
port=$(python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')

# The embedded store (whatever DATABASE_URL the caller exports for the other suites).
env -u DATABASE_URL -u REDIS_URL \
  BULKHEAD_DATA_DIR="$dir" BULKHEAD_ADMIN_TOKEN="$TOKEN" BULKHEAD_LISTEN="127.0.0.1:$port" \
  BULKHEAD_LOG=warn BULKHEAD_SHUTDOWN_DELAY_SECONDS=0 "$BINARY" >"$dir/gateway.log" 2>&1 &
pid=$!
cleanup() {
  kill "$pid" 2>/dev/null || true
  wait "$pid" 2>/dev/null || true
  rm -rf "$dir"
}
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -fs "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done

status=0
# One worker: with two, schemathesis's threads call Python 3.11's ast module at once, which is
# not thread-safe (cpython gh-106905: a spurious "AST constructor recursion depth mismatch").
"$VENV/bin/schemathesis" run "http://127.0.0.1:$port/admin/v1/openapi.json" \
  --header "Authorization: Bearer $TOKEN" \
  --checks not_a_server_error,status_code_conformance,content_type_conformance,response_schema_conformance,negative_data_rejection \
  --phases examples,coverage,fuzzing \
  --max-examples "${CONTRACT_MAX_EXAMPLES:-50}" --seed "${CONTRACT_SEED:-1}" \
  --generation-database none --workers 1 --no-color --wait-for-schema 10 || status=$?
if [ "$status" -ne 0 ]; then
  echo "== gateway log" >&2
  grep -v -E "^ +([0-9]+:|at )" "$dir/gateway.log" | tail -30 >&2
fi
exit "$status"
