"""bench/registry/run.sh's client.

`scale`: onboards TENANTS tenants with one key each through replica A in bulk, a tenth at a
time; at each tenth, admin writes per second (single onboardings and keys, WRITERS threads,
3 s) and both replicas' memory; measures
the data plane (GET /v1/me through replica B, with oha at a fixed rate) with few tenants and
with all of them; then, while writes run at 200 per second through A, how long each of 100
sampled new keys takes to be served by B.

`cold`: how long replica C, started on the full registry, takes to be ready and to serve a
key, and its memory.
"""

import http.client
import json
import os
import subprocess
import sys
import threading
import time

ADMIN = {"Authorization": "Bearer " + os.environ["ADMIN"], "Content-Type": "application/json"}


def split(base):
    host, port = base.removeprefix("http://").split(":")
    return host, int(port)


class Client:
    def __init__(self, base):
        self.base = base
        self.conn = http.client.HTTPConnection(*split(base), timeout=30)

    def call(self, method, path, body=None, headers=None):
        data = json.dumps(body) if body is not None else None
        for attempt in range(3):
            try:
                self.conn.request(method, path, body=data, headers=headers or {})
                r = self.conn.getresponse()
                raw = r.read()
                return r.status, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, ConnectionError):
                self.conn.close()
                self.conn = http.client.HTTPConnection(*split(self.base), timeout=30)
                if attempt == 2:
                    raise
        raise RuntimeError("unreachable")


def rss_mb(pid):
    try:
        for line in open(f"/proc/{pid}/status"):
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    except OSError:
        pass
    return float("nan")


def pct(values, q):
    s = sorted(values)
    return s[min(len(s) - 1, int(q * len(s)))] if s else float("nan")


def onboard(client, slug):
    status, answer = client.call("POST", "/admin/v1/tenants", {"slug": slug, "display_name": slug}, ADMIN)
    if status not in (201, 202):
        sys.exit(f"onboarding {slug}: {status} {answer}")
    status, key = client.call("POST", f"/admin/v1/tenants/{slug}/keys", {"name": "k", "scope": "read"}, ADMIN)
    if status != 201:
        sys.exit(f"key of {slug}: {status} {key}")
    return key["key"]


def data_plane(base, key, label):
    """GET /v1/me through `base` at 500 requests/s for 5 s (oha, latency-corrected)."""
    out = subprocess.run(
        ["oha", "--no-tui", "--output-format", "json", "-z", "5s", "-q", "500", "-c", "4",
         "--latency-correction", "-H", f"api-key: {key}", f"{base}/v1/me"],
        capture_output=True, text=True, check=True)
    r = json.loads(out.stdout)
    p = r["latencyPercentiles"]
    ok = r.get("statusCodeDistribution", {}).get("200", 0)
    print(f"data plane ({label}): GET /v1/me at 500/s: p50 {p['p50'] * 1000:.3f} ms, "
          f"p99 {p['p99'] * 1000:.3f} ms, {ok} ok of {sum(r.get('statusCodeDistribution', {}).values())}")


def bulk(client, start, count):
    """Onboards tenants start..start+count with a key each, 1,000 per call; their keys."""
    keys = {}
    for first in range(start, start + count, 1000):
        items = [{"slug": f"t{i:06d}", "display_name": f"t{i:06d}", "keys": [{"name": "k", "scope": "read"}]}
                 for i in range(first, min(start + count, first + 1000))]
        status, answer = client.call("POST", "/admin/v1/tenants:batch", {"tenants": items}, ADMIN)
        if status != 200 or answer["failed"]:
            sys.exit(f"bulk onboarding at {first}: {status} {str(answer)[:500]}")
        for r in answer["results"]:
            keys[int(r["tenant"]["slug"][1:])] = r["keys"][0]["key"]
    return keys


def single_writes(writers, seconds, round_no):
    """Single admin writes (onboard a tenant, then issue it a key) with `writers` threads for
    `seconds`; writes per second."""
    stop = time.monotonic() + seconds
    counts = [0] * writers

    def writer(w):
        client = Client(os.environ["A"])
        n = 0
        while time.monotonic() < stop:
            onboard(client, f"s{round_no:02d}-{w:02d}-{n:05d}")
            counts[w] += 2
            n += 1

    threads = [threading.Thread(target=writer, args=(w,)) for w in range(writers)]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return sum(counts) / (time.monotonic() - started)


def scale():
    tenants = int(os.environ["TENANTS"])
    writers = int(os.environ["WRITERS"])
    pid_a, pid_b = os.environ["PID_A"], os.environ["PID_B"]
    print(f"{tenants} tenants with a key each (bulk onboarded, a tenth at a time, through replica A), "
          f"then {writers} writer threads of single writes for 3 s at each tenth; Postgres")
    # The tokenizers are built on a background thread at start (a fixed ~90 MB): measure
    # after they are.
    time.sleep(3)
    print(f"empty: RSS A {rss_mb(pid_a):.0f} MB, B {rss_mb(pid_b):.0f} MB")
    a = Client(os.environ["A"])
    keys = bulk(a, 0, 1)
    time.sleep(1)
    data_plane(os.environ["B"], keys[0], "1 tenant")

    step = max(1, tenants // 10)
    print(f"{'tenants':>8} {'bulk/s':>8} {'writes/s':>9} {'RSS A MB':>9} {'RSS B MB':>9}")
    done = 1
    round_no = 0
    while done < tenants:
        goal = min(tenants, done + step)
        started = time.monotonic()
        keys.update(bulk(a, done, goal - done))
        bulk_rate = (goal - done) / (time.monotonic() - started)
        done = goal
        round_no += 1
        rate = single_writes(writers, 3, round_no)
        print(f"{done:>8} {bulk_rate:>8.0f} {rate:>9.0f} {rss_mb(pid_a):>9.0f} {rss_mb(pid_b):>9.0f}", flush=True)

    # B has caught up when the last bulk key is served there.
    wait_until = time.monotonic() + 120
    while time.monotonic() < wait_until:
        status, _ = Client(os.environ["B"]).call("GET", "/v1/me", headers={"api-key": keys[done - 1]})
        if status == 200:
            break
        time.sleep(0.2)
    print(f"after: RSS A {rss_mb(pid_a):.0f} MB, B {rss_mb(pid_b):.0f} MB")
    data_plane(os.environ["B"], keys[done - 1], f"{done} tenants")

    # Propagation: keys made through A at 200 writes/s; how soon B serves each of 100 of them.
    delays = []
    stop = threading.Event()

    def probe(key, made):
        c = Client(os.environ["B"])
        while not stop.is_set():
            status, _ = c.call("GET", "/v1/me", headers={"api-key": key})
            if status == 200:
                delays.append(time.monotonic() - made)
                return
            time.sleep(0.002)

    a = Client(os.environ["A"])
    probes = []
    interval = 1 / 200
    due = time.monotonic()
    for n in range(1000):
        now = time.monotonic()
        if now < due:
            time.sleep(due - now)
        due += interval
        slug = f"t{n % done:06d}"
        status, key = a.call("POST", f"/admin/v1/tenants/{slug}/keys", {"name": f"p{n}", "scope": "read"}, ADMIN)
        made = time.monotonic()
        if status != 201:
            sys.exit(f"key: {status} {key}")
        if n % 10 == 0:
            t = threading.Thread(target=probe, args=(key["key"], made))
            t.start()
            probes.append(t)
    for t in probes:
        t.join(timeout=10)
    stop.set()
    print(f"propagation A -> B while 200 writes/s run: {len(delays)} of {len(probes)} keys served; "
          f"p50 {pct(delays, .5) * 1000:.0f} ms, p99 {pct(delays, .99) * 1000:.0f} ms, "
          f"max {max(delays, default=float('nan')) * 1000:.0f} ms")
    with open("/tmp/bulkhead-registry-bench-key", "w") as f:
        f.write(keys[done - 1])


def cold():
    started = float(os.environ["STARTED"])
    base = os.environ["C"]
    key = open("/tmp/bulkhead-registry-bench-key").read()
    ready = serving = None
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline and serving is None:
        try:
            c = Client(base)
            if ready is None:
                status, _ = c.call("GET", "/readyz")
                if status == 200:
                    ready = time.monotonic() - started
            if ready is not None:
                status, _ = c.call("GET", "/v1/me", headers={"api-key": key})
                if status == 200:
                    serving = time.monotonic() - started
        except (OSError, http.client.HTTPException):
            pass
        time.sleep(0.02)
    samples = [f"{rss_mb(os.environ['PID_C']):.0f} MB then"]
    for wait in (3, 7):
        time.sleep(wait)
        samples.append(f"{rss_mb(os.environ['PID_C']):.0f} MB {time.monotonic() - started:.0f} s after start")
    print(f"cold replica: ready after {ready:.2f} s, serving a key after {serving:.2f} s; RSS "
          + ", ".join(samples))


if __name__ == "__main__":
    {"scale": scale, "cold": cold}[sys.argv[1]]()
