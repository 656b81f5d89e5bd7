#!/usr/bin/env bash
# Response cache: the added latency of a cache hit at a fixed 1000 requests/s, beside a miss
# (issue 18). In the production configuration (Postgres store, Redis quotas and cache), azure-sim
# as Azure. See bench/README.md ("Response cache").
#
#   bench/cache/run.sh [duration-seconds] [runs]          # defaults: 15 3
#
# Each run starts fresh processes and measures, in turn, at the same fixed rate
# (`oha -q RATE --latency-correction -c CONNS`, after a 2 s warm-up at the same rate):
#   hit     through the gateway, the same body every call, warmed first: served from the cache
#   miss    through the gateway with `Cache-Control: no-store` (x-bulkhead-cache: bypass): every
#           call reaches azure-sim, the cache is neither read nor written
#   fresh   through the gateway, a new body every call (oha -Z, lines of distinct bodies): a real
#           miss, i.e. a cache lookup (memory, then Redis), azure-sim, and a store (about 1% of
#           the calls repeat a body, as oha picks lines at random: those are hits)
#   direct  azure-sim alone, no gateway (the baseline the gateway adds to)
# Before the load, one call per target checks the x-bulkhead-cache header (hit / bypass / miss);
# during it, the gateway's own cache counters (/metrics) must show hits for every call of the hit
# run and none in the miss runs, or the summary says the run is not valid.
#
# Environment (all optional; the names are bench/gateway's):
#   BENCH_OP=embeddings  embeddings (bench/cache/embeddings.json, base64 as the OpenAI SDKs ask;
#                        deterministic) or chat (bench/gateway/body.json, max_tokens 256)
#   BENCH_RATE=1000      requests/s;  BENCH_CONNS=32: connections
#   BENCH_PIN=1          the gateway on CPU 0; oha and azure-sim on CPU 1 (0: no pinning).
#                        Postgres and Redis are the machine's services, not pinned.
#   BENCH_SCHED=fifo     fifo (default as root: `chrt -f 10`), nice, none (default otherwise)
#   BENCH_STORE=postgres the gateway's store: postgres (a fresh database on BENCH_POSTGRES,
#                        default postgres://postgres@127.0.0.1:5432, dropped on exit) or sqlite
#   BENCH_QUOTA=redis    the tenant's limits: redis (at REDIS_URL, default
#                        redis://127.0.0.1:6379), local, none. The cache uses REDIS_URL whenever
#                        BENCH_QUOTA=redis (otherwise it is the in-process layer alone)
#   BENCH_LEASE_CALLS=8  BULKHEAD_QUOTA_LEASE_CALLS
#   BENCH_CACHE_MAX_BYTES=67108864  the tenant's response_cache.max_bytes (64 MiB: the fresh
#                        run fills it and evicts; ttl_seconds is 3600)
#   BENCH_FRESH=1        measure the "fresh" target (needs oha with -Z, body lines)
#   BENCH_SKIP_BUILD=1   use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_OUT=DIR        raw outputs, results.tsv and summary.txt (default: a new /tmp dir)
#   BENCH_KEEP=1         keep the temporary working directory (configs, logs)
#   OHA=path             the oha binary (default: oha on PATH, else ~/.cargo/bin/oha)
#
# Every process it starts is stopped on exit (normal, error, Ctrl-C, SIGTERM), the database it
# made is dropped and the cache entries it wrote are deleted (redis-cli, under a prefix of its
# own); every load command runs under `timeout`. Traffic goes only to 127.0.0.1.
# Needs: oha (`cargo install oha --locked`), curl, python3, taskset, chrt, psql, redis-cli.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

DURATION="${1:-15}"
DURATION="${DURATION%s}"
RUNS="${2:-3}"
OP="${BENCH_OP:-embeddings}"
RATE="${BENCH_RATE:-1000}"
CONNS="${BENCH_CONNS:-32}"
PIN="${BENCH_PIN:-1}"
STORE="${BENCH_STORE:-postgres}"
QUOTA="${BENCH_QUOTA:-redis}"
LEASE_CALLS="${BENCH_LEASE_CALLS:-8}"
CACHE_MAX_BYTES="${BENCH_CACHE_MAX_BYTES:-67108864}"
REDIS="${REDIS_URL:-redis://127.0.0.1:6379}"
BENCH_POSTGRES="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
WARMUP=2
if [ -z "${OHA:-}" ]; then
  OHA="$(command -v oha || echo "$HOME/.cargo/bin/oha")"
fi
if [ "$(id -u)" = 0 ]; then SCHED="${BENCH_SCHED:-fifo}"; else SCHED="${BENCH_SCHED:-none}"; fi
case "$SCHED" in
  fifo) PRIO=(chrt -f 10) ;;
  nice) PRIO=(nice -n -10) ;;
  none) PRIO=() ;;
  *) echo "BENCH_SCHED must be fifo, nice or none" >&2; exit 2 ;;
esac

HERE="$(cd "$(dirname "$0")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BULKHEAD="$TARGET_DIR/release/bulkhead"
AZURE_SIM="$TARGET_DIR/release/azure-sim"
case "$OP" in
  embeddings)
    DEPLOYMENT=text-embedding-3-small
    URL_PATH="/openai/deployments/$DEPLOYMENT/embeddings?api-version=2024-10-21"
    BODY="$HERE/embeddings.json"
    ANSWER='"object":"list"'
    ;;
  chat)
    DEPLOYMENT=gpt-4o
    URL_PATH="/openai/deployments/$DEPLOYMENT/chat/completions?api-version=2024-10-21"
    BODY="$ROOT/bench/gateway/body.json"
    ANSWER='"object":"chat.completion"'
    ;;
  *) echo "BENCH_OP must be embeddings or chat" >&2; exit 2 ;;
esac

tools=("$OHA" curl python3 taskset timeout chrt)
[ "$STORE" = postgres ] && tools+=(psql)
[ "$QUOTA" = redis ] && tools+=(redis-cli)
for tool in "${tools[@]}"; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
if [ "$PIN" = 1 ] && [ "$(nproc --all)" -lt 2 ]; then
  echo "BENCH_PIN=1 needs 2 CPUs; use BENCH_PIN=0" >&2
  exit 2
fi
FRESH="${BENCH_FRESH:-1}"
if [ "$FRESH" = 1 ] && ! grep -q -- '-Z <BODY_PATH_LINES>' <<<"$("$OHA" --help 2>&1)"; then
  echo "this oha has no -Z (body lines): the 'fresh' target is skipped" >&2
  FRESH=0
fi

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release -p bulkhead-api -p azure-sim --bins) >&2
fi
if [ ! -x "$BULKHEAD" ] || [ ! -x "$AZURE_SIM" ]; then
  echo "binaries missing in $TARGET_DIR/release" >&2
  exit 2
fi

WORK="$(mktemp -d /tmp/bulkhead-cache-bench-work.XXXXXX)"
OUT="${BENCH_OUT:-$(mktemp -d /tmp/bulkhead-cache-bench.XXXXXX)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"
# Upper bound of the whole run (seconds); normally it takes about a third of this.
MAX_SECONDS=$(( RUNS * 4 * 3 * (DURATION + 40) + 300 ))

PIDS=()
# shellcheck source=bench/lib/procs.sh
source "$HERE/../lib/procs.sh"
DATABASES=()
CACHE_PREFIXES=()
drop_cache_keys() { # PREFIX: the entries and books a gateway of this script wrote in Redis
  redis-cli -u "$REDIS" --scan --pattern "$1*" 2>/dev/null |
    xargs -r -n 500 redis-cli -u "$REDIS" UNLINK >/dev/null 2>&1 || true
}
cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  for db in "${DATABASES[@]}"; do
    psql -q "$BENCH_POSTGRES/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
  for prefix in "${CACHE_PREFIXES[@]}"; do drop_cache_keys "$prefix"; done
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

check_deadline() {
  if [ "$SECONDS" -ge "$MAX_SECONDS" ]; then
    echo "time bound of ${MAX_SECONDS}s reached, stopping" >&2
    exit 124
  fi
}

if [ "$PIN" = 1 ]; then
  SUT_CPUS=0       # the gateway
  AUX_CPUS=1       # oha and azure-sim
else
  SUT_CPUS="0-$(($(nproc --all) - 1))"
  AUX_CPUS="$SUT_CPUS"
fi










# The gateway's cache counters: "hits local redis misses bypasses stores redis_errors".
cache_counters() {
  curl -fsS --max-time 5 -H "Authorization: Bearer $ADMIN" "$GATEWAY/metrics" |
    python3 "$HERE/summarize.py" counters
}

# The x-bulkhead-cache header of one call (and its status must be 200 with a real answer).
cache_header() { # URL KEY BODY-FILE [HEADER...]
  local url="$1" key="$2" body="$3"
  shift 3
  local extra=() h
  for h in "$@"; do extra+=(-H "$h"); done
  curl -sS --max-time 5 -D "$WORK/headers" -o "$WORK/answer" -H "api-key: $key" \
    -H 'content-type: application/json' "${extra[@]}" --data-binary "@$body" "$url" >/dev/null
  if ! head -1 "$WORK/headers" | grep -q ' 200' || ! grep -qF "$ANSWER" "$WORK/answer"; then
    echo "unexpected answer from $url: $(head -1 "$WORK/headers") $(head -c 300 "$WORK/answer")" >&2
    return 1
  fi
  awk -F': *' 'tolower($1) == "x-bulkhead-cache" {gsub(/\r/, "", $2); print $2}' "$WORK/headers"
}

expect_header() { # WANTED LABEL URL KEY BODY-FILE [HEADER...]
  local wanted="$1" label="$2" got
  shift 2
  got="$(cache_header "$@")"
  if [ "$got" != "$wanted" ]; then
    echo "$label: x-bulkhead-cache is '$got', expected '$wanted'" >&2
    exit 1
  fi
  echo "  check: $label answers x-bulkhead-cache: $got"
}

start_sim() { # sets SIM_PID, UPSTREAM_BASE
  cat >"$WORK/sim.json" <<'JSON'
{"request_log_capacity": 0, "resources": [{"name": "aoai-bench", "region": "eastus",
  "keys": ["upstream-bench-key"], "deployments": [
    {"name": "gpt-4o", "model": "gpt-4o", "version": "2024-11-20"},
    {"name": "text-embedding-3-small", "model": "text-embedding-3-small"}]}]}
JSON
  local workers=()
  [ "$PIN" = 1 ] && workers=(--workers 1)
  rm -f "$WORK/sim.addr"
  "${PRIO[@]}" taskset -c "$AUX_CPUS" "$AZURE_SIM" --listen 127.0.0.1:0 --config "$WORK/sim.json" \
    --request-log 0 --ready-file "$WORK/sim.addr" "${workers[@]}" >"$WORK/sim.log" 2>&1 &
  SIM_PID=$!
  PIDS+=("$SIM_PID")
  for _ in $(seq 1 200); do [ -s "$WORK/sim.addr" ] && break; sleep 0.05; done
  UPSTREAM_BASE="http://$(cat "$WORK/sim.addr")/r/aoai-bench"
  main_thread_first "$SIM_PID"
  wait_http "$UPSTREAM_BASE/"
}

# The gateway on a fresh store; the upstream, a pool, tenant `bench` (limits, cache on) and its
# key. Sets GATEWAY_PID, GATEWAY, ADMIN, KEY.
start_gateway() {
  local port data env=()
  port="$(free_port)"
  data="$WORK/gateway-data-$RANDOM"
  ADMIN="bench-admin-$RANDOM$RANDOM$RANDOM"
  if [ "$QUOTA" = redis ]; then
    CACHE_PREFIX="bulkhead-bench:cache:$$:$RANDOM:"
    CACHE_PREFIXES+=("$CACHE_PREFIX")
    env+=(REDIS_URL="$REDIS" BULKHEAD_QUOTA_LEASE_CALLS="$LEASE_CALLS"
      BULKHEAD_CACHE_KEY_PREFIX="$CACHE_PREFIX")
  fi
  if [ "$STORE" = postgres ]; then
    local db="bulkhead_bench_cache_$$_$RANDOM"
    psql -q "$BENCH_POSTGRES/postgres" -c "CREATE DATABASE $db" >/dev/null
    DATABASES+=("$db")
    env+=(DATABASE_URL="$BENCH_POSTGRES/$db"
      BULKHEAD_MASTER_KEY="$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')")
  fi
  env -u DATABASE_URL -u REDIS_URL BULKHEAD_DATA_DIR="$data" BULKHEAD_ADMIN_TOKEN="$ADMIN" \
    BULKHEAD_LISTEN="127.0.0.1:$port" BULKHEAD_LOG=warn "${env[@]}" \
    "${PRIO[@]}" taskset -c "$SUT_CPUS" "$BULKHEAD" >"$WORK/gateway.log" 2>&1 &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  GATEWAY="http://127.0.0.1:$port"
  wait_http "$GATEWAY/healthz"
  main_thread_first "$GATEWAY_PID"
  local auth="Authorization: Bearer $ADMIN" json="Content-Type: application/json"
  call() { curl -fsS --max-time 10 -X "$1" -H "$auth" -H "$json" "$GATEWAY$2" -d "$3"; }
  call POST /admin/v1/openai/resources "{\"name\":\"aoai-bench\",\"endpoint\":\"$UPSTREAM_BASE\",
    \"region\":\"eastus\",\"data_zone\":\"us\",\"api_key\":\"upstream-bench-key\"}" >/dev/null
  call POST /admin/v1/openai/deployments "{\"resource\":\"aoai-bench\",\"name\":\"$DEPLOYMENT\",
    \"model\":\"$DEPLOYMENT\",\"capacity_tpm\":100000000}" >/dev/null
  call POST /admin/v1/openai/pools "{\"alias\":\"$DEPLOYMENT\",\"members\":[{
    \"deployment\":\"aoai-bench/$DEPLOYMENT\",\"priority\":0,\"weight\":1}]}" >/dev/null
  local limits='{}'
  [ "$QUOTA" != none ] && limits='{"tokens_per_minute":1000000000,
    "requests_per_minute":100000000,"monthly_tokens":1000000000000}'
  call POST /admin/v1/tenants "{\"slug\":\"bench\",\"display_name\":\"Bench\",
    \"openai\":{\"isolation\":\"shared\"},\"limits\":$limits}" >/dev/null
  # The cache, as an admin turns it on: an hour, 64 MiB (the fresh run evicts within it).
  call PATCH /admin/v1/tenants/bench \
    "{\"response_cache\":{\"ttl_seconds\":3600,\"max_bytes\":$CACHE_MAX_BYTES}}" >/dev/null
  KEY="$(call POST /admin/v1/tenants/bench/keys '{"name":"bench","scope":"read-write"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
}

# Bodies for the fresh target: one JSON body a line, each different from every other (and
# from the hit body), LINES of them, numbered from FIRST. oha picks a line at random for each
# call (with replacement), so a run of M calls on N lines repeats about M/2N of its bodies:
# those few are hits, counted and shown.
fresh_bodies() { # OUTPUT FIRST LINES
  python3 - "$BODY" "$OP" "$1" "$2" "$3" <<'PY'
import json, sys
body_path, op, out, first, lines = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4]), int(sys.argv[5])
body = json.load(open(body_path))
mark = "@@N@@"
if op == "embeddings":
    body["input"] += f" (ref {mark})"
else:
    body["messages"][-1]["content"] += f" (ref {mark})"
head, tail = json.dumps(body, separators=(",", ":")).split(mark)
with open(out, "w") as f:
    f.writelines(f"{head}{n}{tail}\n" for n in range(first, first + lines))
PY
}

# One measurement at the fixed rate. Appends a row to results.tsv.
measure() { # RUN TARGET URL KEY SUT_PID BODY-ARGS... -- EXTRA-OHA-ARGS...
  local run="$1" target="$2" url="$3" key="$4" sut="$5"
  shift 5
  local args=() warm=()
  while [ "$#" -gt 0 ] && [ "$1" != -- ]; do args+=("$1"); shift; done
  [ "$#" -gt 0 ] && shift
  local extra=("$@")
  local raw="$OUT/$run-$target.json"
  check_deadline
  local gen=(timeout -k 5 $((DURATION + 20)) "${PRIO[@]}" taskset -c "$AUX_CPUS")
  # Warm-up (connections, pools, the hit's local copy), not recorded. The fresh target warms
  # up on bodies of its own, so the measured ones are all new.
  warm=("${args[@]}")
  if [ "$target" = fresh ]; then warm=(-Z "$WORK/fresh-warm.jsonl"); fi
  timeout -k 5 $((WARMUP + 10)) "${PRIO[@]}" taskset -c "$AUX_CPUS" "$OHA" --no-tui \
    -q "$RATE" -z "${WARMUP}s" -c "$CONNS" -m POST -H "api-key: $key" -T application/json \
    "${extra[@]}" "${warm[@]}" "$url" >/dev/null 2>&1
  settle "$sut" >/dev/null
  local background before_sut before_cache="-" after_cache="-"
  background="$(background_busy)"
  [ "$target" != direct ] && before_cache="$(cache_counters)"
  before_sut="$(proc_cpu_ns "$sut")"
  "${gen[@]}" "$OHA" --no-tui --output-format json -q "$RATE" --latency-correction \
    -z "${DURATION}s" -c "$CONNS" -m POST -H "api-key: $key" -T application/json \
    "${extra[@]}" "${args[@]}" "$url" >"$raw" 2>"$raw.err"
  local after_sut settled
  after_sut="$(proc_cpu_ns "$sut")"
  settled="$(settle "$sut")"
  [ "$target" != direct ] && after_cache="$(cache_counters)"
  python3 "$HERE/summarize.py" row "$raw" "$run" "$target" "$background" \
    $((after_sut - before_sut)) $((settled - after_sut)) "$before_cache" "$after_cache" >>"$RESULTS"
  tail -n 1 "$RESULTS" | awk -F'\t' '{printf "  %-6s rps=%-7s p50=%sus p90=%sus p99=%sus bad=%s bg=%s%% server=%sus/req (+%s after) hits=%s misses=%s bypasses=%s\n", $2, $3, $4, $5, $6, $10 + $11, $12, $13, $14, $15, $18, $19}'
}

round() { # RUN
  local run="$1"
  echo "== run $run ($(date +%H:%M:%S))"
  start_sim
  start_gateway
  local gw="$GATEWAY$URL_PATH" direct="$UPSTREAM_BASE$URL_PATH"
  # Direct: a real answer from azure-sim with its own key.
  cache_header "$direct" upstream-bench-key "$BODY" >/dev/null
  # Hit: the first call stores the answer (in the background), the next ones read it.
  expect_header miss "first call of the hit body" "$gw" "$KEY" "$BODY"
  local got=""
  for _ in $(seq 1 50); do
    got="$(cache_header "$gw" "$KEY" "$BODY")"
    [ "$got" = hit ] && break
    sleep 0.1
  done
  expect_header hit "hit body" "$gw" "$KEY" "$BODY"
  expect_header bypass "hit body with Cache-Control: no-store" "$gw" "$KEY" "$BODY" \
    'Cache-Control: no-store'
  local targets=(hit miss)
  if [ "$FRESH" = 1 ]; then
    # New bodies: 50 for each call of the measurement (about 1% of its calls repeat a body;
    # 10 for chat's 1 KB bodies, about 5%), 2 for each call of the warm-up.
    local factor=50
    [ "$OP" = chat ] && factor=10
    local per=$(( factor * RATE * DURATION ))
    fresh_bodies "$WORK/fresh-warm.jsonl" $(( run * 10000000 )) $(( RATE * (WARMUP + 2) ))
    fresh_bodies "$WORK/fresh.jsonl" $(( run * 10000000 + 1000000 )) "$per"
    fresh_bodies "$WORK/fresh-probe.json" $(( run * 10000000 + 9000000 )) 1
    expect_header miss "a new body" "$gw" "$KEY" "$WORK/fresh-probe.json"
    targets+=(fresh)
  fi
  targets+=(direct)
  for target in "${targets[@]}"; do
    case "$target" in
      hit) measure "$run" hit "$gw" "$KEY" "$GATEWAY_PID" -D "$BODY" ;;
      miss) measure "$run" miss "$gw" "$KEY" "$GATEWAY_PID" -D "$BODY" -- -H 'Cache-Control: no-store' ;;
      fresh) measure "$run" fresh "$gw" "$KEY" "$GATEWAY_PID" -Z "$WORK/fresh.jsonl" ;;
      direct) measure "$run" direct "$direct" upstream-bench-key "$SIM_PID" -D "$BODY" ;;
    esac
  done
  if grep -q '"level":"ERROR"' "$WORK/gateway.log"; then
    echo "the gateway logged errors:" >&2
    grep '"level":"ERROR"' "$WORK/gateway.log" | head -5 >&2
  fi
  cp "$WORK/gateway.log" "$OUT/$run-gateway.log"
  stop_pid "$GATEWAY_PID"
  stop_pid "$SIM_PID"
  # This run's cache entries (up to the tenant's max_bytes) leave Redis now, not at exit.
  [ "$QUOTA" = redis ] && drop_cache_keys "$CACHE_PREFIX"
  return 0
}

python3 "$HERE/summarize.py" header >"$RESULTS"
{
  echo "bulkhead response-cache benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(nproc --all) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "bulkhead: $BULKHEAD (built $(date -r "$BULKHEAD" +%Y-%m-%dT%H:%M); tree now: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') + working tree)"
  echo "oha: $("$OHA" --version | cut -d' ' -f2)  -q $RATE --latency-correction -c $CONNS, ${DURATION}s per measurement after ${WARMUP}s warm-up, $RUNS run(s)"
  if [ "$PIN" = 1 ]; then
    echo "pinning: gateway on CPU 0; oha and azure-sim (--workers 1) on CPU 1; Postgres and Redis unpinned"
  else
    echo "pinning: none"
  fi
  echo "scheduling: ${PRIO[*]:-default} for every benchmark process (BENCH_SCHED=$SCHED)"
  store="SQLite in the gateway's data dir"
  [ "$STORE" = postgres ] && store="Postgres (a fresh database on $BENCH_POSTGRES)"
  cache="in process only"
  [ "$QUOTA" = redis ] && cache="Redis at $REDIS + in-process layer"
  echo "gateway: BULKHEAD_LOG=warn; store: $store; limits: $QUOTA (lease calls $LEASE_CALLS);"
  echo "         response cache: $cache, tenant TTL 3600 s, max_bytes $CACHE_MAX_BYTES"
  echo "request: POST $URL_PATH, body $(wc -c <"$BODY") bytes ($BODY)"
} | tee "$OUT/header.txt"

for run in $(seq 1 "$RUNS"); do round "$run"; done

python3 "$HERE/summarize.py" summary "$RESULTS" | tee "$OUT/summary.txt"
echo "raw outputs: $OUT"
