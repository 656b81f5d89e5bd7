#!/usr/bin/env bash
# Added latency of a search through the gateway (shared index: filter parsed, ANDed with the
# tenant clause, keys namespaced, answer rewritten) over the same search sent to azure-sim
# directly. See README.md.
#
#   bench/search/run.sh [duration-seconds] [rate]      # defaults: 15 200
#
# Environment: BENCH_SKIP_BUILD=1 uses the binaries in $CARGO_TARGET_DIR/release; OHA=path.
# Needs oha (`cargo install oha --locked`), curl, python3. Traffic goes only to 127.0.0.1;
# every process it starts is stopped on exit.
set -euo pipefail

DURATION="${1:-15}"
RATE="${2:-200}"
OHA="${OHA:-oha}"
HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
for tool in "$OHA" curl python3 timeout; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p bulkhead-api -p azure-sim --bins) >&2
fi

WORK="$(mktemp -d /tmp/bulkhead-search-bench.XXXXXX)"
PIDS=()
cleanup() {
  local status=$?
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do wait "$pid" 2>/dev/null || true; done
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
PIDS+=($!)
for _ in $(seq 1 100); do [ -s "$WORK/sim.addr" ] && break; sleep 0.05; done
SIM="http://$(cat "$WORK/sim.addr")"

PORT="$(free_port)"
ADMIN="bench-admin-token"
BULKHEAD_LISTEN="127.0.0.1:$PORT" BULKHEAD_DATA_DIR="$WORK/gw" BULKHEAD_ADMIN_TOKEN="$ADMIN" \
  BULKHEAD_LOG=warn "$TARGET_DIR/release/bulkhead" >"$WORK/gw.log" 2>&1 &
PIDS+=($!)
GW="http://127.0.0.1:$PORT"
for _ in $(seq 1 200); do curl -sf "$GW/readyz" >/dev/null && break; sleep 0.05; done

admin() { curl -sf -H "Authorization: Bearer $ADMIN" -H 'Content-Type: application/json' "$GW$1" -d "$2"; }
admin /admin/v1/search/services "{\"name\":\"search-bench\",\"endpoint\":\"$SIM/r/search-bench\",\"region\":\"eastus\",\"api_key\":\"bench-admin-key\"}" >/dev/null
admin /admin/v1/search/index-templates '{"name":"docs","fields":[
  {"name":"id","type":"Edm.String","key":true,"filterable":true},
  {"name":"title","type":"Edm.String","searchable":true},
  {"name":"category","type":"Edm.String","filterable":true,"facetable":true},
  {"name":"rating","type":"Edm.Int32","filterable":true,"sortable":true},
  {"name":"tags","type":"Collection(Edm.String)","filterable":true}]}' >/dev/null
for slug in bench-a bench-b; do
  admin /admin/v1/tenants "{\"slug\":\"$slug\",\"display_name\":\"$slug\",\"search\":{\"isolation\":\"shared_index\",\"service\":\"search-bench\"}}" >/dev/null
done
KEY="$(admin /admin/v1/tenants/bench-a/keys '{"name":"bench","scope":"read-write"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
KEY_B="$(admin /admin/v1/tenants/bench-b/keys '{"name":"bench","scope":"read-write"}' | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"

# 500 documents per tenant, the same keys in both.
python3 - "$WORK/docs.json" <<'PY'
import json, sys
docs = [{"@search.action": "upload", "id": f"d{i}", "title": f"hotel {i % 7} pool",
         "category": f"c{i % 5}", "rating": i % 10, "tags": [f"t{i % 3}"]} for i in range(500)]
json.dump({"value": docs}, open(sys.argv[1], "w"))
PY
for key in "$KEY" "$KEY_B"; do
  curl -sf -H "api-key: $key" -H 'Content-Type: application/json' \
    "$GW/indexes/docs/docs/index?api-version=2024-07-01" -d @"$WORK/docs.json" >/dev/null
done

# The caller's 10-clause filter; the direct run replays exactly what the gateway sent upstream.
FILTER="rating ge 1 and rating le 8 and category ne 'c9' and title ne 'x' and id ne 'zz' and tags/any(t: t ne 'q') and (rating ne 3 or category eq 'c1') and not (category eq 'c7') and search.in(category, 'c0,c1,c2,c3,c4') and rating lt 100"
python3 -c 'import json,sys; print(json.dumps({"search": "pool", "filter": sys.argv[1], "top": 10, "count": True}))' "$FILTER" >"$WORK/gw-body.json"
curl -sf -H "api-key: $KEY" -H 'Content-Type: application/json' \
  "$GW/indexes('docs')/docs/search.post.search?api-version=2024-07-01" -d @"$WORK/gw-body.json" >"$WORK/gw-answer.json"
curl -sf "$SIM/_sim/requests?resource=search-bench" | python3 -c '
import json, sys
entries = json.load(sys.stdin)["requests"]
last = [e for e in entries if e["path"].split("?")[0].endswith("search.post.search")][-1]
json.dump(last["body"], open(sys.argv[1], "w"))
print(last["path"].split("?")[0])' "$WORK/direct-body.json" >"$WORK/direct-path"
DIRECT_URL="$SIM/r/search-bench$(cat "$WORK/direct-path")?api-version=2024-07-01"

run() { # name url key body
  timeout $((DURATION + 30)) "$OHA" --no-tui --output-format json -z "${DURATION}s" -q "$RATE" -c 8 \
    --latency-correction -m POST -T application/json -H "api-key: $3" -d "$(cat "$4")" "$2" >"$WORK/$1.json"
}
# Warm both paths, then measure direct, gateway, direct, gateway.
"$OHA" --no-tui -n 200 -c 4 -m POST -T application/json -H "api-key: bench-admin-key" -d "$(cat "$WORK/direct-body.json")" "$DIRECT_URL" >/dev/null
"$OHA" --no-tui -n 200 -c 4 -m POST -T application/json -H "api-key: $KEY" -d "$(cat "$WORK/gw-body.json")" "$GW/indexes('docs')/docs/search.post.search?api-version=2024-07-01" >/dev/null
for round in 1 2; do
  run "direct-$round" "$DIRECT_URL" bench-admin-key "$WORK/direct-body.json"
  run "gateway-$round" "$GW/indexes('docs')/docs/search.post.search?api-version=2024-07-01" "$KEY" "$WORK/gw-body.json"
done
python3 - "$WORK" "$RATE" "$DURATION" <<'PY'
import json, sys, os
work, rate, duration = sys.argv[1], sys.argv[2], sys.argv[3]
print(f"search with a 10-clause filter, {rate} req/s for {duration} s, 8 connections")
print(f"{'run':<10} {'ok':>6} {'p50 ms':>8} {'p90 ms':>8} {'p99 ms':>8} {'max ms':>8}")
rows = {}
for name in ["direct-1", "gateway-1", "direct-2", "gateway-2"]:
    r = json.load(open(os.path.join(work, name + ".json")))
    p = r["latencyPercentiles"]
    ok = r.get("statusCodeDistribution", {}).get("200", 0)
    rows[name] = p
    print(f"{name:<10} {ok:>6} {p['p50']*1000:>8.3f} {p['p90']*1000:>8.3f} {p['p99']*1000:>8.3f} {r['summary']['slowest']*1000:>8.3f}")
for q in ["p50", "p99"]:
    added = [(rows[f"gateway-{i}"][q] - rows[f"direct-{i}"][q]) * 1000 for i in (1, 2)]
    print(f"added {q}: " + ", ".join(f"{a:.3f} ms" for a in added))
PY
