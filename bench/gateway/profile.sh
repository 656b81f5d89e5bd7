#!/usr/bin/env bash
# Where the gateway's time goes, next to the nginx proxy, on the set-up of run.sh (fixed-body
# nginx upstream, same pinning and scheduling). See bench/README.md ("Profiling").
#
#   bench/gateway/profile.sh [seconds]          # default 10 (per step)
#
# 1. CPU time per request of each server (schedstat, all threads and workers): closed loop
#    and one connection back to back.
# 2. System calls per request (perf stat on syscall tracepoints) over exactly N requests.
# 3. malloc() calls per request (a uprobe on libc's malloc, removed on exit).
# 4. perf record (DWARF call graphs) of the gateway in the closed loop, attributed to regions
#    of the request path by regions.py; a flame graph when inferno is installed
#    (`cargo install inferno --locked`).
# Output: profile.md (and perf data, folded stacks, flamegraph.svg) in BENCH_OUT or a new
# /tmp directory. Needs what run.sh needs plus perf (`apt-get install linux-perf`), as root.
# Same environment variables as run.sh (BENCH_PIN, BENCH_SCHED, BENCH_SKIP_BUILD, ...).
set -euo pipefail
PROFILE_SECONDS="${1:-10}"
DURATION="$PROFILE_SECONDS"
MAX_SECONDS=$((PROFILE_SECONDS * 12 + 900))
# shellcheck source=bench/gateway/lib.sh
source "$(dirname "$0")/lib.sh"
command -v perf >/dev/null || { echo "missing: perf (apt-get install linux-perf)" >&2; exit 2; }

printf 'scenario\trun\ttarget\tmode\trps\tp50_us\tp90_us\tp99_us\tp999_us\tmax_us\trequests\tnon2xx\terrors\tcpu0\tcpu1\tbg\tsut_cpu\tsut_us_per_req\tsut_after_us_per_req\n' >"$RESULTS"
REPORT="$OUT/profile.md"
LIBC="$(ldd "$BULKHEAD" | awk '/libc\.so\.6/ {print $3}')"
PROBE=""
remove_probe() { [ -z "$PROBE" ] || perf probe -q -d "$PROBE" 2>/dev/null || true; }
CLEANUP_HOOKS+=(remove_probe)

start_upstream fixed
start_gateway
start_proxy
check_answer "$GATEWAY$URL_PATH" "$KEY"
check_answer "$PROXY$URL_PATH" "$KEY"
NGINX_WORKERS="$(cat "/proc/$PROXY_PID/task/"*/children | tr ' ' '\n' | grep . | paste -sd,)"

{
  echo "# Gateway profile $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo
  echo "bulkhead: $BULKHEAD (built $(date -r "$BULKHEAD" +%Y-%m-%dT%H:%M)); pinned and scheduled as in run.sh:"
  echo "pinning: BENCH_PIN=$PIN; scheduling: ${PRIO[*]:-default}; load average $(cut -d' ' -f1-3 /proc/loadavg)"
  echo
  echo "## 1. CPU time per request (schedstat)"
  echo
} >"$REPORT"
for target in gateway nginx; do
  if [ "$target" = gateway ]; then url="$GATEWAY$URL_PATH"; pid="$GATEWAY_PID"; else url="$PROXY$URL_PATH"; pid="$PROXY_PID"; fi
  measure profile 1 "$target" closed "$url" "$KEY" "$pid"
  measure profile 1 "$target" single "$url" "$KEY" "$pid"
done
{
  echo "| server | mode | req/s | p50 ms | server CPU | server CPU us/request |"
  echo "|---|---|---|---|---|---|"
  awk -F'\t' 'NR > 1 {printf "| %s | %s | %.0f | %.3f | %s%% | %s |\n", $3, $4, $5, $6 / 1000, $17, $18}' "$RESULTS"
  echo
} >>"$REPORT"

# Exactly N requests at a fixed rate, while `perf stat -e EVENTS` watches PIDS.
count_per_request() { # TARGET URL PIDS EVENTS N -> "event per-request" lines
  local url="$2" pids="$3" events="$4" n="$5" stat="$OUT/stat-$1.txt"
  perf stat -x, -e "$events" -p "$pids" -o "$stat" -- sleep $((n / RATE + 3)) &
  local perf_pid=$!
  PIDS+=("$perf_pid")
  sleep 0.5
  timeout -k 5 $((n / RATE + 20)) "${PRIO[@]}" taskset -c "$AUX_CPUS" "$OHA" --no-tui \
    --output-format json -n "$n" -q "$RATE" -c "$CONNS" -m POST -H "api-key: $KEY" \
    -T application/json -D "$BODY" "$url" >"$OUT/stat-$1.oha.json" 2>/dev/null
  wait "$perf_pid" || true
  forget_pid "$perf_pid"
  awk -F, -v n="$n" '$1 ~ /^[0-9]+$/ && $1 / n >= 0.05 {printf "%-36s %.1f\n", $3, $1 / n}' "$stat"
}

N=$((RATE * 5))
SYSCALLS=""
for s in read write readv writev recvfrom sendto recvmsg sendmsg epoll_wait epoll_ctl \
  futex getrandom accept4 connect close ioctl sched_yield mmap munmap madvise; do
  [ -e "/sys/kernel/tracing/events/syscalls/sys_enter_$s" ] && SYSCALLS+="syscalls:sys_enter_$s,"
done
SYSCALLS="${SYSCALLS%,}"
{
  echo "## 2. System calls per request ($N requests at $RATE/s)"
  echo
  if [ -n "$SYSCALLS" ]; then
    echo '```'
    echo "gateway:"; count_per_request gateway "$GATEWAY$URL_PATH" "$GATEWAY_PID" "$SYSCALLS" "$N"
    echo "nginx proxy (workers):"; count_per_request nginx "$PROXY$URL_PATH" "$NGINX_WORKERS" "$SYSCALLS" "$N"
    echo '```'
  else
    echo "(no syscall tracepoints in /sys/kernel/tracing)"
  fi
  echo
  echo "## 3. malloc() calls per request ($N requests at $RATE/s)"
  echo
} >>"$REPORT"
if [ -n "$LIBC" ] && perf probe -q -x "$LIBC" -a bench_malloc=malloc 2>/dev/null; then
  PROBE="probe_libc:bench_malloc"
  {
    echo '```'
    echo "gateway:"; count_per_request gateway-malloc "$GATEWAY$URL_PATH" "$GATEWAY_PID" "$PROBE" "$N"
    echo "nginx proxy (workers):"; count_per_request nginx-malloc "$PROXY$URL_PATH" "$NGINX_WORKERS" "$PROBE" "$N"
    echo '```'
    echo
  } >>"$REPORT"
  remove_probe
  PROBE=""
else
  echo "(perf probe on $LIBC malloc is not available here)" >>"$REPORT"
fi

# 4. Sampling profile of the gateway in the closed loop.
echo "perf record of the gateway (${PROFILE_SECONDS}s)" >&2
BENCH_BODY="$BODY" BENCH_KEY="$KEY" timeout -k 5 $((PROFILE_SECONDS + 30)) "${PRIO[@]}" \
  taskset -c "$AUX_CPUS" wrk -t2 -c"$CONNS" -d"$((PROFILE_SECONDS + 2))s" -s "$HERE/chat.lua" \
  "$GATEWAY$URL_PATH" >"$OUT/perf-wrk.txt" 2>&1 &
WRK_PID=$!
PIDS+=("$WRK_PID")
sleep 1
perf record -q -F 499 --call-graph dwarf,16384 -p "$GATEWAY_PID" -o "$OUT/perf.data" \
  -- sleep "$PROFILE_SECONDS" 2>/dev/null
wait "$WRK_PID" || true
forget_pid "$WRK_PID"
RPS="$(sed -n 's/^RESULT rps=\([0-9.]*\).*/\1/p' "$OUT/perf-wrk.txt")"
REQUESTS="$(python3 -c "print(int(float('${RPS:-0}') * $PROFILE_SECONDS))")"
{
  echo "## 4. Where the gateway's CPU goes (closed loop, perf record -F 499, DWARF stacks)"
  echo
  echo "About $REQUESTS requests served while sampling ($RPS req/s under perf)."
  echo
} >>"$REPORT"
if command -v inferno-collapse-perf >/dev/null; then
  echo "perf script | inferno-collapse-perf (takes a minute or two)" >&2
  perf script -i "$OUT/perf.data" 2>/dev/null | inferno-collapse-perf 2>/dev/null >"$OUT/gateway.folded"
  python3 "$HERE/regions.py" "$OUT/gateway.folded" "$REQUESTS" >>"$REPORT"
  inferno-flamegraph --title "bulkhead, closed loop" <"$OUT/gateway.folded" >"$OUT/flamegraph.svg" 2>/dev/null || true
else
  echo "(install inferno for the region breakdown: cargo install inferno --locked)" >>"$REPORT"
fi
{
  echo
  echo "Hottest functions (self time):"
  echo
  echo '```'
  perf report -i "$OUT/perf.data" --no-children --sort dso,sym -g none -q --percent-limit 0.7 \
    2>/dev/null | cut -c1-150 | head -40
  echo '```'
} >>"$REPORT"

cat "$REPORT"
echo "profile: $REPORT (perf data, folded stacks and flamegraph.svg next to it)"
