"""Summarises results.tsv (written by run.sh): raw figures, gateway-vs-nginx comparisons and
the targets of issue 4.

    python3 bench/gateway/summarize.py /tmp/bulkhead-bench.XXXX/results.tsv

Comparisons are paired within a run (the gateway and nginx measured back to back against the
same upstream process), then the median over runs is judged; "k/n" says in how many runs the
target held. "added" = gateway minus nginx proxy at the same percentile; "vs direct" = minus
the upstream called with no proxy at all. "bg busy" is how busy the machine was in the
second before a measurement (other people's jobs; ours are idle then): figures taken with a
high bg are suspect. "server CPU us/req" is CPU time of the server under test per request (for
"direct", of the upstream), which other load on the machine barely changes.
"""

import csv
import statistics
import sys

# (label, metric, kind, limit): kind "ratio" must be >= limit, "added" must be <= limit (us).
TARGETS = [
    ("closed-loop throughput, gateway / nginx", ("closed", "rps"), "ratio", 0.70),
    (f"added latency at fixed rate, p50", ("fixed", "p50_us"), "added", 200),
    (f"added latency at fixed rate, p99", ("fixed", "p99_us"), "added", 350),
    ("added latency, one connection back to back, p50", ("single", "p50_us"), "added", 100),
]


def load(path):
    rows = list(csv.DictReader(open(path, encoding="utf-8"), delimiter="\t"))
    data = {}
    for r in rows:
        data[(r["scenario"], int(r["run"]), r["target"], r["mode"])] = r
    return rows, data


def num(r, field):
    v = r.get(field, "") if r else ""
    return float(v) if v not in ("", None) else None


def fmt_us(v):
    return "-" if v is None else f"{v / 1000:.3f}"


def main():
    rows, data = load(sys.argv[1])
    scenarios = list(dict.fromkeys(r["scenario"] for r in rows))
    for scenario in scenarios:
        runs = sorted({int(r["run"]) for r in rows if r["scenario"] == scenario})
        targets = [t for t in ("gateway", "nginx", "floor", "direct")
                   if any(r["target"] == t and r["scenario"] == scenario for r in rows)]
        title = {"fixed": "fixed-body nginx upstream (headline)",
                 "sim": "azure-sim upstream"}.get(scenario, scenario)
        print(f"\n### Upstream: {title}\n")
        print("Latencies in ms. closed = wrk -t2 -c32 (closed loop); fixed = oha fixed rate with "
              "latency correction; single = wrk -t1 -c1.\n")
        print("| run | target | closed req/s | closed p50 | closed p99 | CPU0/CPU1 busy (closed) "
              "| server CPU us/req (closed) | fixed req/s | fixed p50 | fixed p99 | fixed p99.9 "
              "| single req/s | single p50 | single p99 | bg busy | bad |")
        print("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|")
        invalid = False
        for run in runs:
            for t in targets:
                c = data.get((scenario, run, t, "closed"))
                f = data.get((scenario, run, t, "fixed"))
                s = data.get((scenario, run, t, "single"))
                bad = sum(int(num(x, "non2xx") or 0) + int(num(x, "errors") or 0)
                          for x in (c, f, s) if x)
                invalid |= bad > 0
                cpu = f'{c["cpu0"]}% / {c["cpu1"]}%' if c else "-"
                per_req = (f'{float(c["sut_us_per_req"]) + float(c.get("sut_after_us_per_req") or 0):.1f}'
                           if c else "-")
                bg = max((int(x.get("bg") or 0) for x in (c, f, s) if x), default=0)
                print(f"| {run} | {t} | {num(c, 'rps') or 0:,.0f} | {fmt_us(num(c, 'p50_us'))} "
                      f"| {fmt_us(num(c, 'p99_us'))} | {cpu} | {per_req} | {num(f, 'rps') or 0:,.0f} "
                      f"| {fmt_us(num(f, 'p50_us'))} | {fmt_us(num(f, 'p99_us'))} "
                      f"| {fmt_us(num(f, 'p999_us'))} | {num(s, 'rps') or 0:,.0f} "
                      f"| {fmt_us(num(s, 'p50_us'))} | {fmt_us(num(s, 'p99_us'))} | {bg}% | {bad} |")
        if invalid:
            print("\n**Some requests failed (bad > 0: non-2xx or socket errors); "
                  "the figures of that row are not valid.**")

        print("\nMedian over runs:\n")
        print("| target | closed req/s | server CPU us/req (closed) | of which after the load "
              "| fixed p50 | fixed p99 | single p50 |")
        print("|---|---|---|---|---|---|---|")
        for t in targets:
            med = lambda mode, field: statistics.median(
                [num(data.get((scenario, r, t, mode)), field) or 0 for r in runs])
            total = statistics.median(
                [(num(data.get((scenario, r, t, "closed")), "sut_us_per_req") or 0)
                 + (num(data.get((scenario, r, t, "closed")), "sut_after_us_per_req") or 0)
                 for r in runs])
            print(f"| {t} | {med('closed', 'rps'):,.0f} | {total:.1f} "
                  f"| {med('closed', 'sut_after_us_per_req'):.1f} "
                  f"| {fmt_us(med('fixed', 'p50_us'))} "
                  f"| {fmt_us(med('fixed', 'p99_us'))} | {fmt_us(med('single', 'p50_us'))} |")

        print("\nTargets (issue 4), gateway vs nginx proxy, paired per run:\n")
        print("| target | limit | per run | median | vs direct (median) | met |")
        print("|---|---|---|---|---|---|")
        for label, (mode, field), kind, limit in TARGETS:
            values, direct = [], []
            for run in runs:
                g = num(data.get((scenario, run, "gateway", mode)), field)
                n = num(data.get((scenario, run, "nginx", mode)), field)
                d = num(data.get((scenario, run, "direct", mode)), field)
                if g is None or n is None:
                    continue
                values.append(g / n if kind == "ratio" else g - n)
                if d is not None:
                    direct.append(g / d if kind == "ratio" else g - d)
            if not values:
                continue
            median = statistics.median(values)
            ok = [v >= limit if kind == "ratio" else v <= limit for v in values]
            met = median >= limit if kind == "ratio" else median <= limit
            if kind == "ratio":
                shown, lim = ", ".join(f"{v:.0%}" for v in values), f">= {limit:.0%}"
                med_s = f"{median:.0%}"
                dir_s = f"{statistics.median(direct):.0%}" if direct else "-"
            else:
                shown = ", ".join(f"{v / 1000:+.3f}" for v in values)
                lim, med_s = f"<= {limit / 1000:.2f} ms", f"{median / 1000:+.3f} ms"
                dir_s = f"{statistics.median(direct) / 1000:+.3f} ms" if direct else "-"
            print(f"| {label} | {lim} | {shown} | {med_s} | {dir_s} "
                  f"| {'yes' if met else 'NO'} ({sum(ok)}/{len(ok)} runs) |")


if __name__ == "__main__":
    main()
