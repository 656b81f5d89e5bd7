# shellcheck shell=bash
# Process and CPU helpers shared by the benchmark scripts (bench/gateway, bench/cache): ports,
# waiting for a server, the processes a script started (PIDS) and how they are stopped, FIFO
# scheduling of a server's main thread (SCHED), and exact CPU accounting from /proc.
# Sourced; the caller sets PIDS=() and SCHED (fifo | nice | none).

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'
}

wait_http() { # URL: until it answers anything, for at most 10 s
  for _ in $(seq 1 200); do
    curl -s -o /dev/null --max-time 1 "$1" && return 0
    sleep 0.05
  done
  echo "no answer from $1" >&2
  return 1
}

# Under SCHED_FIFO, threads of equal priority on one CPU never preempt each other. A tokio
# server's main thread runs the accept loop (`block_on`), and with one worker busy on the same
# CPU it would wait until the worker idles: new connections then hang for up to seconds (wrk
# timeouts), which the normal scheduler never does. One priority step up for the main thread
# only (it accepts and sleeps; set once the runtime's threads exist, so they keep the base
# priority) restores what CFS does on its own.
main_thread_first() { # PID
  if [ "$SCHED" = fifo ]; then chrt -f -p 11 "$1" >/dev/null; fi
}

# Once a process is reaped its id may be reused by someone else's: forget it, so cleanup
# never signals a process this script did not start.
forget_pid() { # PID
  local kept=() pid
  for pid in "${PIDS[@]}"; do [ "$pid" = "$1" ] || kept+=("$pid"); done
  PIDS=("${kept[@]}")
}

stop_pid() { # PID: one this script started (SIGTERM, then SIGKILL after 5 s)
  kill -TERM "$1" 2>/dev/null || true
  for _ in $(seq 1 100); do kill -0 "$1" 2>/dev/null || break; sleep 0.05; done
  kill -KILL "$1" 2>/dev/null || true
  wait "$1" 2>/dev/null || true
  forget_pid "$1"
}

cpu_ticks() { # busy ticks of cpu0 and cpu1 from /proc/stat
  awk '/^cpu[01] /{print $2+$3+$4+$7+$8+$9}' /proc/stat | paste -sd' '
}

total_ticks() {
  awk '/^cpu[01] /{print $2+$3+$4+$5+$6+$7+$8+$9}' /proc/stat | paste -sd' '
}

# On-CPU time (ns, from schedstat: exact, unlike tick sampling) of the given processes, all
# their threads, and their direct children (nginx workers).
proc_cpu_ns() {
  local pid child
  for pid in "$@"; do
    for child in "$pid" $(cat "/proc/$pid/task/"*/children 2>/dev/null); do
      cat "/proc/$child/task/"*/schedstat 2>/dev/null || true
    done
  done | awk '{s += $1} END {printf "%d\n", s}'
}

# Busy share (%) of the whole machine over one second, while our processes are idle.
background_busy() {
  local b0 t0 b1 t1
  b0="$(cpu_ticks)"; t0="$(total_ticks)"
  sleep 1
  b1="$(cpu_ticks)"; t1="$(total_ticks)"
  python3 -c 'import sys; b0,b1,t0,t1=(sum(map(int,a.split())) for a in sys.argv[1:]); print(round(100*(b1-b0)/max(1,t1-t0)))' \
    "$b0" "$b1" "$t0" "$t1"
}

# Work a server does after the load stopped still belongs to the requests it served (the
# gateway's usage ledger may still be writing their records), and it must not run into the
# next measurement. Waits until the server uses less than 2% of a core over half a second
# (at most 120 s) and prints its CPU time (ns) then.
settle() { # PID
  local previous now
  previous="$(proc_cpu_ns "$1")"
  now="$previous"
  for _ in $(seq 1 240); do
    sleep 0.5
    now="$(proc_cpu_ns "$1")"
    [ $((now - previous)) -lt 10000000 ] && break
    previous="$now"
  done
  echo "$now"
}
