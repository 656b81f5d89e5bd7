#!/usr/bin/env bash
# Gateway overhead benchmark: bulkhead vs a plain nginx proxy_pass, side by side, in front of
# the same fast upstream. See bench/README.md ("Gateway benchmark").
#
#   bench/gateway/run.sh [duration-seconds] [runs]          # defaults: 15 3
#
# Environment (all optional):
#   BENCH_PIN=1          pin: the server under test on CPU 0, load generator + upstream on
#                        CPU 1 (BENCH_PIN=0: no pinning, 2 gateway workers, 2 nginx workers)
#   BENCH_RATE=1000      requests/s of the fixed-rate run
#   BENCH_CONNS=32       connections of the closed-loop and fixed-rate runs
#   BENCH_SIM_RUNS=1     rounds against azure-sim as the upstream (0 to skip)
#   BENCH_SCHED=fifo     scheduling of every process of the benchmark: fifo (default as root:
#                        `chrt -f 10`, so jobs of other people on the machine cannot delay a
#                        wake-up; the kernel's RT throttling still leaves them 5% of each CPU),
#                        nice (`nice -n -10`), none (default when not root)
#   BENCH_DIRECT=1       also measure the upstream alone (no proxy), as a floor
#   BENCH_FLOOR=1        also measure bench/floor (a bare hyper proxy on the gateway's stack);
#                        built into $CARGO_TARGET_DIR/floor unless BENCH_SKIP_BUILD=1 finds it
#   BENCH_QUOTA=none     the tenant's limits: none (no tokenizer, no quota check), local (counted in
#                        process), redis (counted in Redis at REDIS_URL, default 127.0.0.1:6379)
#   BENCH_LEASE_CALLS=8  with BENCH_QUOTA=redis: BULKHEAD_QUOTA_LEASE_CALLS (0: Redis for every call)
#   BENCH_STORE=sqlite   the gateway's store (registry and usage ledger): sqlite (embedded), or
#                        postgres (a fresh database on BENCH_POSTGRES, default
#                        postgres://postgres@127.0.0.1:5432, dropped on exit; needs psql)
#   BENCH_SKIP_BUILD=1   use the binaries already in $CARGO_TARGET_DIR/release
#   BENCH_OUT=DIR        where raw outputs and results.tsv go (default: a new /tmp dir)
#   BENCH_KEEP=1         keep the temporary working directory (configs, logs, data dir)
#   OHA=path             the oha binary (default: oha on PATH)
#
# Every process it starts is stopped on exit (normal, error, Ctrl-C, SIGTERM); every load
# command runs under `timeout`, and no measurement starts past a time bound. Traffic goes only to
# 127.0.0.1. Needs: nginx, wrk, oha (`cargo install oha --locked`), curl, python3, taskset.
set -euo pipefail
DURATION="${1:-15}"
RUNS="${2:-3}"
SIM_RUNS="${BENCH_SIM_RUNS:-1}"
DIRECT="${BENCH_DIRECT:-1}"
# Upper bound of the whole run (seconds); normally it takes about a third of this.
MAX_SECONDS=$(( (RUNS + SIM_RUNS) * (2 + DIRECT + ${BENCH_FLOOR:-1}) * 3 * (${DURATION%s} + 40) + 300 ))
# shellcheck source=bench/gateway/lib.sh
source "$(dirname "$0")/lib.sh"

printf 'scenario\trun\ttarget\tmode\trps\tp50_us\tp90_us\tp99_us\tp999_us\tmax_us\trequests\tnon2xx\terrors\tcpu0\tcpu1\tbg\tsut_cpu\tsut_us_per_req\tsut_after_us_per_req\n' >"$RESULTS"

scenario() { # fixed | sim, RUN
  local upstream="$1" run="$2"
  echo "== upstream=$upstream run=$run ($(date +%H:%M:%S))"
  start_upstream "$upstream"
  start_gateway
  start_proxy
  check_answer "$GATEWAY$URL_PATH" "$KEY"
  check_answer "$PROXY$URL_PATH" "$KEY"
  check_answer "$UPSTREAM_BASE$URL_PATH" "$UPSTREAM_KEY"
  local targets=(gateway nginx)
  if [ "$FLOOR_RUN" = 1 ]; then
    start_floor
    check_answer "$FLOOR_URL$URL_PATH" "$KEY"
    targets+=(floor)
  fi
  [ "$DIRECT" = 1 ] && targets+=(direct)
  for mode in closed fixed single; do
    for target in "${targets[@]}"; do
      case "$target" in
        gateway) measure "$upstream" "$run" gateway "$mode" "$GATEWAY$URL_PATH" "$KEY" "$GATEWAY_PID" ;;
        nginx) measure "$upstream" "$run" nginx "$mode" "$PROXY$URL_PATH" "$KEY" "$PROXY_PID" ;;
        floor) measure "$upstream" "$run" floor "$mode" "$FLOOR_URL$URL_PATH" "$KEY" "$FLOOR_PID" ;;
        # No proxy: the upstream's own key; the "server" is the upstream itself.
        direct) measure "$upstream" "$run" direct "$mode" "$UPSTREAM_BASE$URL_PATH" "$UPSTREAM_KEY" "$UPSTREAM_PID" ;;
      esac
    done
  done
  if grep -q '"level":"ERROR"' "$WORK/gateway.log"; then
    echo "the gateway logged errors:" >&2
    grep '"level":"ERROR"' "$WORK/gateway.log" | head -5 >&2
  fi
  cp "$WORK/gateway.log" "$OUT/$upstream-$run-gateway.log"
  stop_pid "$GATEWAY_PID"
  stop_pid "$PROXY_PID"
  [ "$FLOOR_RUN" = 1 ] && stop_pid "$FLOOR_PID"
  stop_pid "$UPSTREAM_PID"
}

{
  echo "bulkhead gateway benchmark  $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "host: $(nproc --all) CPUs, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "bulkhead: $BULKHEAD (built $(date -r "$BULKHEAD" +%Y-%m-%dT%H:%M); tree now: $(cd "$ROOT" && git rev-parse --short HEAD 2>/dev/null || echo '?') + working tree)"
  echo "nginx: $(nginx -v 2>&1 | cut -d/ -f2)  wrk: $(wrk -v 2>&1 | head -1 | cut -d' ' -f2)  oha: $("$OHA" --version | cut -d' ' -f2)"
  if [ "$PIN" = 1 ]; then
    echo "pinning: server under test (bulkhead: 1 tokio worker / nginx proxy: 1 worker) on CPU 0;"
    echo "         wrk/oha and the upstream (nginx 1 worker / azure-sim --workers 1) on CPU 1"
  else
    echo "pinning: none (bulkhead: one tokio worker per CPU; nginx proxy: worker_processes auto)"
  fi
  echo "scheduling: ${PRIO[*]:-default} for every benchmark process (BENCH_SCHED=$SCHED)"
  echo "duration ${DURATION}s per measurement (after ${WARMUP}s warm-up), runs: $RUNS (+$SIM_RUNS on azure-sim)"
  echo "closed: wrk -t2 -c$CONNS; fixed: oha -q $RATE --latency-correction -c $CONNS; single: wrk -t1 -c1"
  if [ "${BENCH_STORE:-sqlite}" = postgres ]; then
    store="Postgres (a fresh database on $BENCH_POSTGRES)"
  else
    store="SQLite in the gateway's data dir"
  fi
  leases=""
  [ "${BENCH_QUOTA:-none}" = redis ] && leases=", lease calls ${BENCH_LEASE_CALLS:-8}"
  echo "gateway: BULKHEAD_LOG=warn (registry and usage ledger: $store;"
  echo "         limits: ${BENCH_QUOTA:-none}$leases), API key auth, shared pool, 1 upstream member"
} | tee "$OUT/header.txt"

for run in $(seq 1 "$RUNS"); do scenario fixed "$run"; done
for run in $(seq 1 "$SIM_RUNS"); do scenario sim "$run"; done

python3 "$HERE/summarize.py" "$RESULTS" | tee "$OUT/summary.txt"
echo "raw outputs: $OUT"
