"""Rows and summary of the response-cache benchmark (used by run.sh).

    summarize.py row RAW RUN TARGET BACKGROUND SUT_CPU_NS SUT_AFTER_NS BEFORE AFTER
        one results.tsv row from `oha --output-format json` output; BEFORE/AFTER are the
        gateway's cache counters ("hits local redis misses bypasses stores redis_errors",
        from /metrics) around the measurement ("-" for direct)
    summarize.py counters            the cache counters of /metrics text read on stdin
    summarize.py summary RESULTS     the table of every run, the medians, the added latency

Latencies in microseconds in results.tsv, printed in ms. "added" is a gateway target minus
`direct` (azure-sim called with no gateway) at the same percentile, paired within a run (same
processes, measured back to back), then the median over runs.
"""

import csv
import json
import statistics
import sys

COUNTERS = ("hits", "local", "redis", "misses", "bypasses", "stores", "redis_errors")
COLUMNS = ("run", "target", "rps", "p50_us", "p90_us", "p99_us", "p999_us", "max_us",
           "requests", "non2xx", "errors", "bg", "sut_us_per_req", "sut_after_us_per_req",
           *COUNTERS)
LABELS = {
    "hit": "hit (same body, served from the cache)",
    "miss": "miss (Cache-Control: no-store: bypass)",
    "fresh": "miss (a new body each call: lookup, Azure, store)",
    "direct": "direct (azure-sim, no gateway)",
}


def counters(text):
    found = dict.fromkeys(COUNTERS, 0)
    for line in text.splitlines():
        if line.startswith("#") or " " not in line:
            continue
        name, value = line.rsplit(" ", 1)
        value = int(float(value))
        if name.startswith("bulkhead_cache_hits_total"):
            found["hits"] += value
            if 'layer="local"' in name:
                found["local"] += value
            elif 'layer="redis"' in name:
                found["redis"] += value
        for field, metric in (("misses", "bulkhead_cache_misses_total"),
                              ("bypasses", "bulkhead_cache_bypasses_total"),
                              ("stores", "bulkhead_cache_stores_total"),
                              ("redis_errors", "bulkhead_cache_redis_errors_total")):
            if name == metric or name.startswith(metric + "{"):
                found[field] += value
    return " ".join(str(found[c]) for c in COUNTERS)


def row(raw, run, target, background, sut_ns, after_ns, before, after):
    d = json.load(open(raw, encoding="utf-8"))
    s, p = d["summary"], d["latencyPercentiles"]
    us = lambda v: "" if v is None else str(round(v * 1e6))
    codes = d.get("statusCodeDistribution", {})
    total = sum(codes.values())
    ok = sum(n for c, n in codes.items() if str(c).startswith("2"))
    # oha cancels the requests still in flight when -z ends: not an error of the server.
    errors = sum(n for e, n in d.get("errorDistribution", {}).items()
                 if e != "aborted due to deadline")
    requests = max(1, total)
    if before == "-":
        deltas = [""] * len(COUNTERS)
    else:
        deltas = [str(int(a) - int(b)) for a, b in zip(after.split(), before.split())]
    print("\t".join([run, target, f'{s["requestsPerSec"]:.1f}', us(p.get("p50")),
                     us(p.get("p90")), us(p.get("p99")), us(p.get("p99.9")),
                     us(s.get("slowest")), str(total), str(total - ok), str(errors), background,
                     f"{int(sut_ns) / 1e3 / requests:.1f}", f"{int(after_ns) / 1e3 / requests:.1f}",
                     *deltas]))


def num(r, field):
    v = r.get(field, "") if r else ""
    return float(v) if v not in ("", None) else None


def ms(v):
    return "-" if v is None else f"{v / 1000:.3f}"


def signed(v):
    return "-" if v is None else f"{v / 1000:+.3f}"


def check(r):
    """What is wrong with a row, or ''."""
    problems = []
    if int(r["non2xx"]) or int(r["errors"]):
        problems.append(f'{r["non2xx"]} non-2xx, {r["errors"]} errors')
    if r["target"] == "direct":
        return "; ".join(problems)
    hits, requests = int(r["hits"]), int(r["requests"])
    if r["target"] == "hit" and hits < 0.99 * requests:
        problems.append(f"only {hits} of {requests} calls were hits")
    if r["target"] == "miss" and hits:
        problems.append(f"{hits} hits in a run meant to miss")
    # oha picks the fresh run's bodies at random: about 1% repeat one (5% for chat).
    if r["target"] == "fresh" and hits > 0.06 * requests:
        problems.append(f"{hits} of {requests} calls were hits in a run meant to miss")
    if int(r["redis_errors"]):
        problems.append(f'{r["redis_errors"]} Redis errors')
    return "; ".join(problems)


def summary(path):
    rows = list(csv.DictReader(open(path, encoding="utf-8"), delimiter="\t"))
    data = {(int(r["run"]), r["target"]): r for r in rows}
    runs = sorted({int(r["run"]) for r in rows})
    targets = [t for t in LABELS if any(r["target"] == t for r in rows)]
    print("\nEvery run (latency in ms; cache = hits (local/redis) / misses / bypasses / stores "
          "counted by the gateway during the measurement; the fresh run's few hits are bodies oha "
          "picked twice):\n")
    print("| run | target | req/s | p50 | p90 | p99 | p99.9 | max | requests | bad | bg busy "
          "| server CPU us/req | cache |")
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    problems = []
    for run in runs:
        for t in targets:
            r = data.get((run, t))
            if not r:
                continue
            cache = "-" if t == "direct" else (
                f'{r["hits"]} ({r["local"]}/{r["redis"]}) / {r["misses"]} / {r["bypasses"]} '
                f'/ {r["stores"]}')
            cpu = float(r["sut_us_per_req"]) + float(r["sut_after_us_per_req"] or 0)
            print(f'| {run} | {t} | {float(r["rps"]):,.0f} | {ms(num(r, "p50_us"))} '
                  f'| {ms(num(r, "p90_us"))} | {ms(num(r, "p99_us"))} | {ms(num(r, "p999_us"))} '
                  f'| {ms(num(r, "max_us"))} | {r["requests"]} '
                  f'| {int(r["non2xx"]) + int(r["errors"])} | {r["bg"]}% | {cpu:.1f} | {cache} |')
            wrong = check(r)
            if wrong:
                problems.append(f"run {run} {t}: {wrong}")
    print(f"\nMedians over {len(runs)} run(s), ms (server CPU: the gateway's, for direct "
          "azure-sim's):\n")
    print("| target | p50 | p90 | p99 | server CPU us/req |")
    print("|---|---|---|---|---|")
    med = {}
    for t in targets:
        got = [data[(run, t)] for run in runs if (run, t) in data]
        med[t] = {f: statistics.median(num(r, f) for r in got)
                  for f in ("p50_us", "p90_us", "p99_us")}
        cpu = statistics.median(float(r["sut_us_per_req"]) + float(r["sut_after_us_per_req"] or 0)
                                for r in got)
        print(f'| {LABELS[t]} | {ms(med[t]["p50_us"])} | {ms(med[t]["p90_us"])} '
              f'| {ms(med[t]["p99_us"])} | {cpu:.1f} |')

    def paired(a, b, field):
        diffs = [num(data[(run, a)], field) - num(data[(run, b)], field)
                 for run in runs if (run, a) in data and (run, b) in data]
        return statistics.median(diffs) if diffs else None

    print("\nAdded latency, ms (median over runs of the per-run difference at each "
          "percentile):\n")
    print("| | p50 | p90 | p99 |")
    print("|---|---|---|---|")
    pairs = [(t, "direct", f"{t} over direct") for t in ("hit", "miss", "fresh")]
    pairs += [("hit", "miss", "hit minus miss (no-store)"), ("hit", "fresh", "hit minus miss (new body)")]
    for a, b, label in pairs:
        if a in targets and b in targets:
            print(f"| {label} | " + " | ".join(signed(paired(a, b, f))
                                              for f in ("p50_us", "p90_us", "p99_us")) + " |")
    if problems:
        print("\n**Not valid:**")
        for p in problems:
            print(f"- {p}")
    else:
        print("\nEvery call answered 2xx; every hit run was served from the cache, no call of a "
              "no-store run was, and the fresh runs' hits are the bodies drawn twice (gateway "
              "counters).")


def main():
    mode = sys.argv[1]
    if mode == "row":
        row(*sys.argv[2:10])
    elif mode == "counters":
        print(counters(sys.stdin.read()))
    elif mode == "summary":
        summary(sys.argv[2])
    elif mode == "header":
        print("\t".join(COLUMNS))
    else:
        raise SystemExit(__doc__)


if __name__ == "__main__":
    main()
