"""Where the gateway's CPU goes: folded stacks (inferno-collapse-perf) attributed to regions
of the request path. Used by profile.sh.

    python3 regions.py FOLDED REQUESTS

A sample in a syscall is counted under that syscall. Any other sample goes to the innermost
frame (leaf to root) that matches a region below, so a malloc called from parse_body counts
for parse_body. With REQUESTS (served while sampling), each region is also given in CPU
microseconds per request.
"""

import re
import sys
from collections import defaultdict

REGIONS = [
    ("api openai::openai_target (placement -> routing Target)",
     r"bulkhead_api::openai::openai_target"),
    ("api openai::parse_body (request body -> serde_json::Value)",
     r"bulkhead_api::openai::parse_body"),
    ("router client::answer / read_usage (usage: response -> serde_json::Value)",
     r"OpenAiRouter::answer|client::read_usage"),
    ("reqwest + hyper-util client (request build, Url parse, pool, tower layers)",
     r"reqwest::|hyper_util::client"),
    ("router client::send / attempt, own code (body to_vec, plan, health, timeouts)",
     r"OpenAiRouter::(send|attempt)|openai_router::"),
    ("api openai::route / route_to / handlers, own code (usage record, response)",
     r"bulkhead_api::openai::"),
    ("api auth::authenticate (key digest, snapshot lookups)", r"bulkhead_api::auth::"),
    ("api request_id middleware (uuid v4, span)", r"bulkhead_api::request_id::"),
    ("axum Router / from_fn middleware / extractors / responses",
     r"axum::(routing|middleware|handler|extract|util|response|body)|tower::|axum_core"),
    ("hyper HTTP/1 (server and client connections: parse, encode, buffers)",
     r"hyper::|httparse"),
    ("axum::serve (accept, connection task)", r"axum::serve"),
    ("tokio (scheduler, reactor, timers)", r"tokio::"),
]

# What the time inside a region is spent on: the first frame from the leaf that matches.
KINDS = [
    ("glibc malloc/free", r"^(__GI___libc_malloc|__GI___libc_free|_int_malloc|_int_free|_int_realloc|malloc|cfree|realloc|tcache_\w+|unlink_chunk|malloc_consolidate|__libc_\w+)"),
    ("memcpy/memmove/memcmp", r"^__mem(cpy|move|cmp|set)"),
    ("serde_json parse", r"^<?serde_json::(de|read|value::de)"),
    ("serde_json serialise", r"^<?serde_json::(ser|value::ser)"),
    ("Url parse / idna", r"^<?(url|idna)::"),
    ("http HeaderMap / HeaderName", r"^<?http::header"),
    ("Extensions (type map)", r"^<?http::extensions"),
    ("hyper", r"^<?(hyper|httparse)::"),
    ("tokio", r"^<?tokio::"),
]


def kind_of(frames):
    for frame in reversed(frames):
        for name, pattern in KINDS_RE:
            if pattern.search(frame):
                return name
    return "own code"


KINDS_RE = [(n, re.compile(p)) for n, p in KINDS]


def main():
    path = sys.argv[1]
    requests = int(sys.argv[2]) if len(sys.argv) > 2 else 0
    regions = [(name, re.compile(p)) for name, p in REGIONS]
    totals = defaultdict(int)
    kinds = defaultdict(int)
    total = 0
    for line in open(path, encoding="utf-8", errors="replace"):
        stack, _, count = line.rstrip("\n").rpartition(" ")
        if not count.isdigit():
            continue
        count = int(count)
        total += count
        frames = stack.split(";")
        if "do_syscall_64" in frames:
            i = frames.index("do_syscall_64")
            name = frames[i + 1] if i + 1 < len(frames) else "?"
            name = name.replace("__x64_sys_", "").replace("do_", "")
            totals[f"kernel: {name} syscall (incl. loopback TCP delivery, wake-ups)"] += count
            continue
        region, inner = "other (interrupts, libc without a known caller)", frames
        for i in range(len(frames) - 1, -1, -1):
            hit = next((n for n, p in regions if p.search(frames[i])), None)
            if hit:
                region, inner = hit, frames[i + 1:]
                break
        totals[region] += count
        kinds[(region, kind_of(inner))] += count
    if total == 0:
        raise SystemExit("no samples")
    print(f"| share | CPU us/request | region |\n|---|---|---|")
    for name, count in sorted(totals.items(), key=lambda kv: -kv[1]):
        if count / total < 0.003:
            continue
        per = f"{count / requests / 1000:.1f}" if requests else "-"
        print(f"| {100 * count / total:.1f}% | {per} | {name} |")
    if requests:
        print(f"| 100% | {total / requests / 1000:.1f} | total sampled (perf adds overhead) |")
    print("\nInside each region (first matching frame from the leaf; >= 0.5% of all samples):\n")
    print("| share | CPU us/request | region | spent in |\n|---|---|---|---|")
    for (region, kind), count in sorted(kinds.items(), key=lambda kv: -kv[1]):
        if count / total < 0.005:
            continue
        per = f"{count / requests / 1000:.1f}" if requests else "-"
        print(f"| {100 * count / total:.1f}% | {per} | {region} | {kind} |")


if __name__ == "__main__":
    main()
