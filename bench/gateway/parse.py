"""Turns one raw load-generator output into a results.tsv row (used by run.sh).

    parse.py MODE RAW SCENARIO RUN TARGET BUSY_BEFORE BUSY_AFTER TOTAL_BEFORE TOTAL_AFTER \
             BACKGROUND_PERCENT SUT_CPU_NS SECONDS SUT_AFTER_NS

closed/single: wrk output with chat.lua's RESULT line; fixed: `oha --output-format json`.
Latencies are in microseconds; cpu0/cpu1 are the busy share of each CPU during the run;
bg is the busy share of the machine in the second before it (other people's work: our
processes are idle then); sut_cpu is the CPU time of the server under test (all its threads
and worker processes) as a share of one core, and sut_us_per_req the same per request;
sut_after_us_per_req is the CPU time the server spent after the load stopped, until it went
idle (the gateway's usage ledger writing the last records), per request of the run.
"""

import json
import sys


def wrk(text):
    line = next((l for l in text.splitlines() if l.startswith("RESULT ")), None)
    if line is None:
        raise SystemExit(f"no RESULT line in wrk output:\n{text}")
    f = dict(kv.split("=", 1) for kv in line.split()[1:])
    return {k: f[k] for k in ("rps", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
                              "requests", "non2xx", "errors")}


def oha(text):
    d = json.loads(text)
    s, p = d["summary"], d["latencyPercentiles"]
    us = lambda v: "" if v is None else str(round(v * 1e6))
    codes = d.get("statusCodeDistribution", {})
    ok = sum(n for c, n in codes.items() if str(c).startswith("2"))
    return {
        "rps": f'{s["requestsPerSec"]:.1f}',
        "p50_us": us(p.get("p50")), "p90_us": us(p.get("p90")), "p99_us": us(p.get("p99")),
        "p999_us": us(p.get("p99.9")), "max_us": us(s.get("slowest")),
        "requests": str(sum(codes.values())),
        "non2xx": str(sum(codes.values()) - ok),
        # oha cancels the requests still in flight when -z ends: not an error of the server.
        "errors": str(sum(n for e, n in d.get("errorDistribution", {}).items()
                          if e != "aborted due to deadline")),
    }


def main():
    mode, raw, scenario, run, target = sys.argv[1:6]
    busy0, busy1 = (list(map(int, a.split())) for a in sys.argv[6:8])
    total0, total1 = (list(map(int, a.split())) for a in sys.argv[8:10])
    background, sut_ns, seconds = sys.argv[10], int(sys.argv[11]), float(sys.argv[12])
    after_ns = int(sys.argv[13])
    text = open(raw, encoding="utf-8", errors="replace").read()
    row = oha(text) if mode == "fixed" else wrk(text)
    cpu = [100.0 * (b1 - b0) / max(1, t1 - t0)
           for b0, b1, t0, t1 in zip(busy0, busy1, total0, total1)]
    cpu += [0.0] * (2 - len(cpu))
    sut_seconds = sut_ns / 1e9
    requests = max(1, int(row["requests"]))
    print("\t".join([scenario, run, target, mode, row["rps"], row["p50_us"], row["p90_us"],
                     row["p99_us"], row["p999_us"], row["max_us"], row["requests"],
                     row["non2xx"], row["errors"], f"{cpu[0]:.0f}", f"{cpu[1]:.0f}", background,
                     f"{100 * sut_seconds / seconds:.0f}",
                     f"{1e6 * sut_seconds / requests:.1f}",
                     f"{1e-3 * after_ns / requests:.1f}"]))


if __name__ == "__main__":
    main()
