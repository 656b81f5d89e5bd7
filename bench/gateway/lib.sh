#!/usr/bin/env bash
# Shared by run.sh and profile.sh: configuration from the environment, process bookkeeping
# and cleanup, the upstream / gateway / nginx proxy set-up, and one measurement. Sourced, not
# run. See run.sh for the variables.
set -euo pipefail
shopt -u patsub_replacement 2>/dev/null || true

DURATION="${DURATION:-15}"
DURATION="${DURATION%s}"
RUNS="${RUNS:-3}"
PIN="${BENCH_PIN:-1}"
RATE="${BENCH_RATE:-1000}"
CONNS="${BENCH_CONNS:-32}"
OHA="${OHA:-oha}"
if [ "$(id -u)" = 0 ]; then SCHED="${BENCH_SCHED:-fifo}"; else SCHED="${BENCH_SCHED:-none}"; fi
case "$SCHED" in
  fifo) PRIO=(chrt -f 10) ;;
  nice) PRIO=(nice -n -10) ;;
  none) PRIO=() ;;
  *) echo "BENCH_SCHED must be fifo, nice or none" >&2; exit 2 ;;
esac
WARMUP=2

HERE="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
ROOT="$(cd "$HERE/../.." && pwd)"
TARGET_DIR="${CARGO_TARGET_DIR:-$ROOT/target}"
BULKHEAD="$TARGET_DIR/release/bulkhead"
AZURE_SIM="$TARGET_DIR/release/azure-sim"

for tool in nginx wrk "$OHA" curl python3 taskset timeout chrt; do
  command -v "$tool" >/dev/null || { echo "missing: $tool" >&2; exit 2; }
done
if [ "$PIN" = 1 ] && [ "$(nproc --all)" -lt 2 ]; then
  echo "BENCH_PIN=1 needs 2 CPUs; use BENCH_PIN=0" >&2
  exit 2
fi

if [ "${BENCH_SKIP_BUILD:-0}" != 1 ]; then
  (cd "$ROOT" && cargo build --release --workspace --bins) >&2
fi
[ -x "$BULKHEAD" ] && [ -x "$AZURE_SIM" ] || { echo "binaries missing in $TARGET_DIR/release" >&2; exit 2; }

# The floor (bench/floor): a bare hyper proxy on the gateway's own runtime and HTTP stack, to
# tell what the stack costs from what the gateway adds. Its own crate, not in the workspace.
FLOOR_RUN="${BENCH_FLOOR:-1}"
FLOOR_TARGET_DIR="${BENCH_FLOOR_TARGET_DIR:-$TARGET_DIR/floor}"
FLOOR="$FLOOR_TARGET_DIR/release/bench-floor"
if [ "$FLOOR_RUN" = 1 ]; then
  if [ "${BENCH_SKIP_BUILD:-0}" != 1 ] || [ ! -x "$FLOOR" ]; then
    CARGO_TARGET_DIR="$FLOOR_TARGET_DIR" cargo build --release --manifest-path "$ROOT/bench/floor/Cargo.toml" >&2
  fi
  [ -x "$FLOOR" ] || { echo "bench-floor missing in $FLOOR_TARGET_DIR/release" >&2; exit 2; }
fi

WORK="$(mktemp -d /tmp/bulkhead-bench-work.XXXXXX)"
OUT="${BENCH_OUT:-$(mktemp -d /tmp/bulkhead-bench.XXXXXX)}"
mkdir -p "$OUT"
RESULTS="$OUT/results.tsv"

PIDS=()
# shellcheck source=bench/lib/procs.sh
source "$HERE/../lib/procs.sh"
CLEANUP_HOOKS=()
BENCH_POSTGRES="${BENCH_POSTGRES:-postgres://postgres@127.0.0.1:5432}"
BENCH_DATABASES=()
drop_databases() {
  for db in "${BENCH_DATABASES[@]}"; do
    psql -q "$BENCH_POSTGRES/postgres" -c "DROP DATABASE IF EXISTS $db WITH (FORCE)" >/dev/null 2>&1 || true
  done
}
cleanup() {
  local status=$?
  trap - EXIT INT TERM HUP
  for hook in "${CLEANUP_HOOKS[@]}"; do "$hook" || true; done
  for pid in "${PIDS[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${PIDS[@]}"; do
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$pid" 2>/dev/null || true
    wait "$pid" 2>/dev/null || true
  done
  drop_databases
  if [ "${BENCH_KEEP:-0}" = 1 ]; then echo "kept $WORK" >&2; else rm -rf "$WORK"; fi
  exit "$status"
}
trap cleanup EXIT
trap 'exit 130' INT
trap 'exit 143' TERM HUP

# The whole run is bounded: every load command runs under `timeout`, and no measurement
# starts once MAX_SECONDS (set by the caller) have passed since the start.
MAX_SECONDS="${MAX_SECONDS:-3600}"
check_deadline() {
  if [ "$SECONDS" -ge "$MAX_SECONDS" ]; then
    echo "time bound of ${MAX_SECONDS}s reached, stopping" >&2
    exit 124
  fi
}

if [ "$PIN" = 1 ]; then
  SUT_CPUS=0       # the server under test: bulkhead or the nginx proxy
  AUX_CPUS=1       # load generator and upstream
  PROXY_WORKERS=1
else
  SUT_CPUS="0-$(($(nproc --all) - 1))"
  AUX_CPUS="$SUT_CPUS"
  PROXY_WORKERS=auto
fi


render() { # TEMPLATE OUTPUT KEY=VALUE...
  local text
  text="$(<"$1")"
  local out="$2"
  shift 2
  for pair in "$@"; do text="${text//@${pair%%=*}@/${pair#*=}}"; done
  printf '%s\n' "$text" >"$out"
}

start_nginx() { # NAME CONF CPUS -> sets NGINX_PID
  "${PRIO[@]}" taskset -c "$3" nginx -p "$WORK" -c "$2" -e "$WORK/$1-error.log" >"$WORK/$1.out" 2>&1 &
  NGINX_PID=$!
  PIDS+=("$NGINX_PID")
}



KEY=""
UPSTREAM_BASE=""
UPSTREAM_KEY=upstream-bench-key
URL_PATH="/openai/deployments/gpt-4o/chat/completions?api-version=2024-10-21"
BODY="$HERE/body.json"


# One measurement. MODE: closed | fixed | single. Appends a row to results.tsv.
measure() { # SCENARIO RUN TARGET MODE URL KEY SUT_PID
  local scenario="$1" run="$2" target="$3" mode="$4" url="$5" key="$6" sut="$7"
  local raw="$OUT/$scenario-$run-$target-$mode.txt"
  local limit=$((DURATION + 20))
  check_deadline
  local gen=(timeout -k 5 "$limit" "${PRIO[@]}" taskset -c "$AUX_CPUS")
  # Warm-up (connections, pools, caches), not recorded.
  BENCH_BODY="$BODY" BENCH_KEY="$key" timeout -k 5 $((WARMUP + 10)) \
    "${PRIO[@]}" taskset -c "$AUX_CPUS" wrk -t2 -c"$CONNS" -d"${WARMUP}s" -s "$HERE/chat.lua" "$url" >/dev/null
  settle "$sut" >/dev/null
  local background
  background="$(background_busy)"
  local before_busy before_total before_sut started
  before_busy="$(cpu_ticks)"
  before_total="$(total_ticks)"
  before_sut="$(proc_cpu_ns "$sut")"
  started="$(date +%s.%N)"
  case "$mode" in
    closed)
      BENCH_BODY="$BODY" BENCH_KEY="$key" "${gen[@]}" wrk -t2 -c"$CONNS" -d"${DURATION}s" \
        --latency -s "$HERE/chat.lua" "$url" >"$raw" 2>&1
      ;;
    single)
      BENCH_BODY="$BODY" BENCH_KEY="$key" "${gen[@]}" wrk -t1 -c1 -d"${DURATION}s" \
        --latency -s "$HERE/chat.lua" "$url" >"$raw" 2>&1
      ;;
    fixed)
      "${gen[@]}" "$OHA" --no-tui --output-format json -q "$RATE" --latency-correction \
        -z "${DURATION}s" -c "$CONNS" -m POST -H "api-key: $key" -T application/json \
        -D "$BODY" "$url" >"$raw" 2>"$raw.err"
      ;;
  esac
  local after_busy after_total after_sut elapsed settled
  elapsed="$(python3 -c "import sys,time; print(time.time() - float(sys.argv[1]))" "$started")"
  after_busy="$(cpu_ticks)"
  after_total="$(total_ticks)"
  after_sut="$(proc_cpu_ns "$sut")"
  settled="$(settle "$sut")"
  python3 "$HERE/parse.py" "$mode" "$raw" "$scenario" "$run" "$target" \
    "$before_busy" "$after_busy" "$before_total" "$after_total" "$background" \
    $((after_sut - before_sut)) "$elapsed" $((settled - after_sut)) >>"$RESULTS"
  tail -n 1 "$RESULTS" | awk -F'\t' '{printf "  %-8s %-7s rps=%-9s p50=%sus p99=%sus bad=%s cpu0/1=%s/%s%% bg=%s%% server=%s%% (%sus/req, +%s after)\n", $3, $4, $5, $6, $8, $12 + $13, $14, $15, $16, $17, $18, $19}'
}

check_answer() { # URL KEY: a real chat completion must come back through it
  local answer
  answer="$(curl -sS --max-time 5 -H "api-key: $2" -H 'content-type: application/json' \
    --data-binary "@$BODY" "$1")"
  case "$answer" in
    *'"object":"chat.completion"'*) ;;
    *) echo "unexpected answer from $1: $answer" >&2; return 1 ;;
  esac
}

# Starts the fast upstream: nginx with a fixed body, or azure-sim. Sets UPSTREAM_PID/_BASE.
start_upstream() { # fixed | sim
  local port
  if [ "$1" = fixed ]; then
    port="$(free_port)"
    mkdir -p "$WORK/upstream"
    render "$HERE/upstream.conf.in" "$WORK/upstream.conf" \
      "WORK=$WORK/upstream" "PORT=$port" "RESPONSE=$(<"$HERE/response.json")"
    start_nginx upstream "$WORK/upstream.conf" "$AUX_CPUS"
    UPSTREAM_PID=$NGINX_PID
    UPSTREAM_BASE="http://127.0.0.1:$port/r/aoai-bench"
  else
    local workers=()
    [ "$PIN" = 1 ] && workers=(--workers 1)
    rm -f "$WORK/sim.addr"
    "${PRIO[@]}" taskset -c "$AUX_CPUS" "$AZURE_SIM" --listen 127.0.0.1:0 --config "$HERE/sim.json" \
      --request-log 0 --ready-file "$WORK/sim.addr" "${workers[@]}" >"$WORK/sim.log" 2>&1 &
    UPSTREAM_PID=$!
    PIDS+=("$UPSTREAM_PID")
    for _ in $(seq 1 200); do [ -s "$WORK/sim.addr" ] && break; sleep 0.05; done
    UPSTREAM_BASE="http://$(cat "$WORK/sim.addr")/r/aoai-bench"
    main_thread_first "$UPSTREAM_PID"
  fi
  wait_http "$UPSTREAM_BASE/"
}

# Starts bulkhead on a fresh data dir, registers the upstream, a pool, a tenant and its key.
start_gateway() {
  local port data admin
  port="$(free_port)"
  data="$WORK/gateway-data-$RANDOM"
  admin="bench-admin-$RANDOM$RANDOM$RANDOM"
  local redis=() store=()
  [ "${BENCH_QUOTA:-none}" = redis ] && redis=(REDIS_URL="${REDIS_URL:-redis://127.0.0.1:6379}"
    BULKHEAD_QUOTA_LEASE_CALLS="${BENCH_LEASE_CALLS:-8}")
  if [ "${BENCH_STORE:-sqlite}" = postgres ]; then
    # The production store: a fresh database (registry and usage ledger), dropped on exit.
    local db="bulkhead_bench_$$_$RANDOM"
    psql -q "$BENCH_POSTGRES/postgres" -c "CREATE DATABASE $db" >/dev/null
    BENCH_DATABASES+=("$db")
    store=(DATABASE_URL="$BENCH_POSTGRES/$db"
      BULKHEAD_MASTER_KEY="$(python3 -c 'import base64,os; print(base64.b64encode(os.urandom(32)).decode())')")
  fi
  env BULKHEAD_DATA_DIR="$data" BULKHEAD_ADMIN_TOKEN="$admin" BULKHEAD_LISTEN="127.0.0.1:$port" \
    BULKHEAD_LOG=warn "${redis[@]}" "${store[@]}" \
    "${PRIO[@]}" taskset -c "$SUT_CPUS" "$BULKHEAD" >"$WORK/gateway.log" 2>&1 &
  GATEWAY_PID=$!
  PIDS+=("$GATEWAY_PID")
  GATEWAY="http://127.0.0.1:$port"
  wait_http "$GATEWAY/healthz"
  main_thread_first "$GATEWAY_PID"
  local auth="Authorization: Bearer $admin" json="Content-Type: application/json"
  post() { curl -fsS --max-time 10 -H "$auth" -H "$json" "$GATEWAY$1" -d "$2"; }
  post /admin/v1/openai/resources "{\"name\":\"aoai-bench\",\"endpoint\":\"$UPSTREAM_BASE\",
    \"region\":\"eastus\",\"data_zone\":\"us\",\"api_key\":\"$UPSTREAM_KEY\"}" >/dev/null
  post /admin/v1/openai/deployments '{"resource":"aoai-bench","name":"gpt-4o","model":"gpt-4o",
    "capacity_tpm":100000000}' >/dev/null
  post /admin/v1/openai/pools '{"alias":"gpt-4o","members":[{"deployment":"aoai-bench/gpt-4o",
    "priority":0,"weight":1}]}' >/dev/null
  # BENCH_QUOTA=none (default): no limits, so no tokenizer and no quota check on the hot
  # path; local: limits counted in process; redis: limits counted in Redis (REDIS_URL).
  local limits='{}'
  [ "${BENCH_QUOTA:-none}" != none ] && limits='{"tokens_per_minute":1000000000,
    "requests_per_minute":100000000,"monthly_tokens":1000000000000}'
  post /admin/v1/tenants "{\"slug\":\"bench\",\"display_name\":\"Bench\",
    \"openai\":{\"isolation\":\"shared\"},\"limits\":$limits}" >/dev/null
  KEY="$(post /admin/v1/tenants/bench/keys '{"name":"bench","scope":"read-write"}' |
    python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')"
}

# Starts the bare hyper proxy of bench/floor in front of the upstream. Sets FLOOR_PID/FLOOR_URL.
start_floor() {
  local port
  port="$(free_port)"
  "${PRIO[@]}" taskset -c "$SUT_CPUS" "$FLOOR" "127.0.0.1:$port" "$UPSTREAM_BASE" "$UPSTREAM_KEY" \
    >"$WORK/floor.log" 2>&1 &
  FLOOR_PID=$!
  PIDS+=("$FLOOR_PID")
  FLOOR_URL="http://127.0.0.1:$port"
  wait_http "$FLOOR_URL/"
  main_thread_first "$FLOOR_PID"
}

start_proxy() {
  local port hostport
  port="$(free_port)"
  hostport="${UPSTREAM_BASE#http://}"
  hostport="${hostport%%/*}"
  mkdir -p "$WORK/proxy"
  # The upstream's /r/aoai-bench/ prefix is in the template's proxy_pass.
  render "$HERE/proxy.conf.in" "$WORK/proxy.conf" "WORK=$WORK/proxy" "PORT=$port" \
    "UPSTREAM=$hostport" "WORKERS=$PROXY_WORKERS" "UPSTREAM_KEY=$UPSTREAM_KEY"
  start_nginx proxy "$WORK/proxy.conf" "$SUT_CPUS"
  PROXY_PID=$NGINX_PID
  PROXY="http://127.0.0.1:$port"
  wait_http "$PROXY/"
}

