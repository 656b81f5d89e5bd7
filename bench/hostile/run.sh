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

BASE="http://127.0.0.1:$PORT" ADMIN="$ADMIN" DURATION="$DURATION" python3 - <<'PY'
import http.client, json, os, random, statistics, string, threading, time

host, port = os.environ["BASE"].removeprefix("http://").split(":")
admin = {"Authorization": "Bearer " + os.environ["ADMIN"], "Content-Type": "application/json"}
duration = float(os.environ["DURATION"])

def call(method, path, body=None, headers=None):
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data

# A tenant on a shared pool (the resource is never called: /v1/tokenize counts locally).
call("POST", "/admin/v1/openai/resources", {"name": "aoai", "endpoint": "http://127.0.0.1:9/r/aoai",
     "region": "eastus", "api_key": "k"}, admin)
call("POST", "/admin/v1/openai/deployments", {"resource": "aoai", "name": "gpt-4o", "model": "gpt-4o",
     "capacity_tpm": 1000}, admin)
call("POST", "/admin/v1/openai/pools", {"alias": "gpt-4o", "members": [{"deployment": "aoai/gpt-4o"}]}, admin)
call("POST", "/admin/v1/tenants", {"slug": "bench", "display_name": "Bench", "openai": {"isolation": "shared"}}, admin)
_, key = call("POST", "/admin/v1/tenants/bench/keys", {"name": "k", "scope": "read"}, admin)
key = json.loads(key)["key"]

rng = random.Random(7)
n = 1_000_000
texts = {
    "one letter": "a" * n,
    "random letters": "".join(rng.choice(string.ascii_lowercase) for _ in range(n)),
    "mixed scripts": "".join(rng.choice("aZé漢字Ωж🙂ß, .-_'1") for _ in range(n // 2)),
}
bodies = {name: json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": t}]}).encode()
          for name, t in texts.items()}
stop = time.monotonic() + duration
counts = {name: [] for name in bodies}
statuses = {}
lock = threading.Lock()

def hostile(i):
    names = list(bodies)
    c = http.client.HTTPConnection(host, int(port), timeout=60)
    j = i
    while time.monotonic() < stop:
        name = names[j % len(names)]
        j += 1
        started = time.monotonic()
        c.request("POST", "/v1/tokenize", body=bodies[name],
                  headers={"api-key": key, "Content-Type": "application/json"})
        r = c.getresponse()
        r.read()
        with lock:
            counts[name].append(time.monotonic() - started)
            statuses[r.status] = statuses.get(r.status, 0) + 1

threads = [threading.Thread(target=hostile, args=(i,)) for i in range(4)]
for t in threads:
    t.start()
probes = []
while time.monotonic() < stop:
    started = time.monotonic()
    status, _ = call("GET", "/healthz")
    probes.append((time.monotonic() - started, status))
    time.sleep(0.01)
for t in threads:
    t.join()

lat = sorted(p[0] * 1000 for p in probes)
def pct(values, q):
    return values[min(len(values) - 1, int(q * len(values)))]
print(f"/healthz probes: {len(lat)}, all 200: {all(p[1] == 200 for p in probes)}")
print(f"  p50 {pct(lat, 0.5):.2f} ms, p99 {pct(lat, 0.99):.2f} ms, max {lat[-1]:.2f} ms")
print(f"hostile /v1/tokenize answers by status: {statuses}")
for name, times in counts.items():
    if times:
        ms = sorted(t * 1000 for t in times)
        print(f"  {name}: {len(ms)} calls, p50 {pct(ms, 0.5):.0f} ms, max {ms[-1]:.0f} ms (request time, queueing included)")
PY
