"""bench/move/run.sh's client. Sets up a tenant with DOCS documents (and a neighbour with 1,000)
in a shared index, measures the tenant's search latency at RATE searches/s before the move and
while it is moved to an index of its own, follows the operation, and checks the result.

Search latency is measured from each search's scheduled start (a slow answer delays the next
ones, and that delay is counted), so a stall cannot hide."""

import http.client
import json
import os
import random
import sys
import threading
import time

HOST, PORT = os.environ["BASE"].removeprefix("http://").split(":")
ADMIN = {"Authorization": "Bearer " + os.environ["ADMIN"], "Content-Type": "application/json"}
DOCS = int(os.environ["DOCS"])
DIMENSIONS = int(os.environ["DIMENSIONS"])
RATE = float(os.environ["RATE"])
API = "api-version=2024-07-01"
BASELINE_SECONDS = 10


class Client:
    def __init__(self, host=HOST, port=PORT):
        self.host, self.port = host, int(port)
        self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)

    def call(self, method, path, body=None, headers=None):
        data = json.dumps(body) if body is not None else None
        for attempt in range(2):
            try:
                self.conn.request(method, path, body=data, headers=headers or {})
                r = self.conn.getresponse()
                raw = r.read()
                return r.status, r.headers, (json.loads(raw) if raw else None)
            except (http.client.HTTPException, ConnectionError):
                # The gateway closed an idle keep-alive connection: reconnect once.
                self.conn.close()
                self.conn = http.client.HTTPConnection(self.host, self.port, timeout=120)
                if attempt:
                    raise


def admin(client, method, path, body=None, expect=(200, 201, 202)):
    status, headers, answer = client.call(method, path, body, ADMIN)
    if status not in expect:
        sys.exit(f"{method} {path}: {status} {answer}")
    return status, headers, answer


def cpu_seconds(pid):
    """User + system CPU time of a process so far (from /proc), or 0 when it cannot be read."""
    try:
        fields = open(f"/proc/{pid}/stat").read().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return 0.0


PIDS = {"gateway": os.environ.get("GATEWAY_PID"), "azure-sim": os.environ.get("SIM_PID")}


def cpu():
    return {name: cpu_seconds(pid) for name, pid in PIDS.items() if pid}


def wait_operation(client, location, seen=None):
    while True:
        _, _, op = admin(client, "GET", location)
        if seen is not None:
            seen.append((time.monotonic(), op, cpu()))
        if op["status"] in ("succeeded", "failed", "canceled"):
            return op
        time.sleep(0.05)


def onboard(client, slug):
    status, headers, _ = admin(client, "POST", "/admin/v1/tenants", {
        "slug": slug, "display_name": slug,
        "search": {"isolation": "shared_index", "service": "search-bench"}})
    if status == 202:
        op = wait_operation(client, headers["Operation-Location"])
        if op["status"] != "succeeded":
            sys.exit(f"provisioning {slug}: {op}")
    _, _, key = admin(client, "POST", f"/admin/v1/tenants/{slug}/keys", {"name": "bench", "scope": "read-write"})
    return key["key"]


def document(i, rng):
    return {"@search.action": "upload", "id": f"d{i:06}", "title": f"hotel {i % 7} pool {i}",
            "n": i, "tags": [f"t{i % 3}", f"u{i % 11}"],
            "vec": [round(rng.uniform(-1, 1), 4) for _ in range(DIMENSIONS)]}


def upload(client, key, count):
    rng = random.Random(count)
    for start in range(0, count, 500):
        batch = [document(i, rng) for i in range(start, min(count, start + 500))]
        status, _, answer = client.call("POST", f"/indexes/docs/docs/index?{API}", {"value": batch},
                                        {"api-key": key, "Content-Type": "application/json"})
        if status != 200:
            sys.exit(f"upload: {status} {answer}")


def count(client, key):
    status, _, answer = client.call("POST", f"/indexes/docs/docs/search?{API}",
                                    {"search": "*", "count": True, "top": 0},
                                    {"api-key": key, "Content-Type": "application/json"})
    if status != 200:
        sys.exit(f"count: {status} {answer}")
    return answer["@odata.count"]


SEARCH = {"search": "pool", "filter": "n ge 10 and tags/any(t: t eq 't1')", "top": 10}


class Probe(threading.Thread):
    """Searches at RATE per second until stopped; (scheduled time, latency, status). By default
    as the tenant through the gateway; `direct` = (host, port, path, body, headers) sends the
    gateway's own upstream request to azure-sim instead."""

    def __init__(self, key, direct=None):
        super().__init__(daemon=True)
        if direct:
            host, port, self.path, self.body, self.headers = direct
            self.client = lambda: Client(host, port)
        else:
            self.path, self.body = f"/indexes/docs/docs/search?{API}", SEARCH
            self.headers = {"api-key": key, "Content-Type": "application/json"}
            self.client = Client
        self.samples = []
        self.stopping = threading.Event()

    def run(self):
        client = self.client()
        interval = 1.0 / RATE
        due = time.monotonic()
        while not self.stopping.is_set():
            now = time.monotonic()
            if now < due:
                time.sleep(due - now)
            status, _, _ = client.call("POST", self.path, self.body, self.headers)
            self.samples.append((due, time.monotonic() - due, status))
            due += interval


def upstream_search(client, key):
    """The request the gateway sends upstream for the tenant's search (tenant clause included),
    read back from azure-sim's request log."""
    status, _, _ = client.call("POST", f"/indexes/docs/docs/search?{API}", SEARCH,
                               {"api-key": key, "Content-Type": "application/json"})
    if status != 200:
        sys.exit(f"search: {status}")
    host, port = os.environ["SIM"].removeprefix("http://").split(":")
    sim = Client(host, port)
    _, _, log = sim.call("GET", "/_sim/requests?resource=search-bench&limit=5")
    last = [e for e in log["requests"] if e["path"].split("?")[0].endswith("/docs/search.post.search")
            and "gt '" not in json.dumps(e.get("body"))][-1]
    path = "/r/search-bench" + last["path"]
    return host, port, path, last["body"], {"api-key": "bench-admin-key", "Content-Type": "application/json"}


def percentiles(latencies):
    if not latencies:
        return "no samples"
    s = sorted(latencies)
    pick = lambda q: s[min(len(s) - 1, int(q * len(s)))] * 1000
    return f"n={len(s):>5}  p50 {pick(0.50):7.2f}  p90 {pick(0.90):7.2f}  p99 {pick(0.99):7.2f}  max {s[-1] * 1000:7.2f} ms"


def main():
    client = Client()
    admin(client, "POST", "/admin/v1/search/services", {
        "name": "search-bench", "endpoint": os.environ["SIM"] + "/r/search-bench", "region": "eastus",
        "api_key": "bench-admin-key", "index_capacity": 50})
    admin(client, "POST", "/admin/v1/search/index-templates", {"name": "docs", "fields": [
        {"name": "id", "type": "Edm.String", "key": True, "filterable": True, "sortable": True},
        {"name": "title", "type": "Edm.String", "searchable": True},
        {"name": "n", "type": "Edm.Int32", "filterable": True, "sortable": True},
        {"name": "tags", "type": "Collection(Edm.String)", "filterable": True},
        {"name": "vec", "type": "Collection(Edm.Single)", "searchable": True, "dimensions": DIMENSIONS,
         "vectorSearchProfile": "vp"}],
        "vectorSearch": {"algorithms": [{"name": "hnsw-1", "kind": "hnsw"}],
                         "profiles": [{"name": "vp", "algorithm": "hnsw-1"}]}})
    key = onboard(client, "bench")
    neighbour = onboard(client, "neighbour")
    started = time.monotonic()
    upload(client, key, DOCS)
    upload(client, neighbour, 1000)
    print(f"loaded {DOCS} + 1000 documents in {time.monotonic() - started:.1f} s")
    if count(client, key) != DOCS:
        sys.exit("the tenant does not see its documents")

    direct = upstream_search(client, key)
    baseline, baseline_direct = Probe(key), Probe(key, direct)
    baseline.start()
    baseline_direct.start()
    time.sleep(BASELINE_SECONDS)
    for p in (baseline, baseline_direct):
        p.stopping.set()
        p.join()

    probe, probe_direct = Probe(key), Probe(key, direct)
    probe.start()
    probe_direct.start()
    status, headers, answer = admin(client, "PATCH", "/admin/v1/tenants/bench",
                                    {"search": {"isolation": "dedicated_index", "service": "search-bench"}})
    if status != 202:
        sys.exit(f"the move did not start: {status} {answer}")
    seen = []
    op = wait_operation(client, headers["Operation-Location"], seen)
    for p in (probe, probe_direct):
        p.stopping.set()
        p.join()
    if op["status"] != "succeeded":
        sys.exit(f"move: {op}")

    def copied(o):
        return sum(i.get("copied", 0) for i in o.get("progress", {}).get("indexes", {}).values())

    copying = [(t, c) for t, o, c in seen if o["phase"] == "copying"]
    after = [(t, c) for t, o, c in seen
             if copying and t > copying[0][0] and o["phase"] not in ("copying", "creating_target")]
    if not copying or not after:
        sys.exit(f"the copy was not observed (polled every 50 ms): phases {[o['phase'] for _, o in seen]}")
    (copy_start, cpu_start), (copy_end, cpu_end) = copying[0], after[0]
    docs_copied = copied(op)
    move_seconds = seen[-1][0] - seen[0][0]
    phases = []
    for t, o, _ in seen:
        if not phases or phases[-1][0] != o["phase"]:
            phases.append((o["phase"], t))

    def during_copy(p):
        return [lat for due, lat, _ in p.samples if copy_start <= due <= copy_end]

    failures = [s for p in (probe, baseline, probe_direct, baseline_direct) for _, _, s in p.samples if s != 200]
    print(f"copy: {docs_copied} documents in {copy_end - copy_start:.2f} s "
          f"= {docs_copied / (copy_end - copy_start):.0f} documents/s (phase times from 50 ms polling)")
    print("CPU during the copy: " + ", ".join(
        f"{name} {cpu_end[name] - cpu_start[name]:.2f} s ({(cpu_end[name] - cpu_start[name]) / (copy_end - copy_start):.0%})"
        for name in cpu_start))
    print(f"move: {move_seconds:.2f} s to succeeded; phases: "
          + ", ".join(f"{name} +{t - seen[0][0]:.2f}s" for name, t in phases)
          + f"; comparison passes {op['progress'].get('passes')}, corrected {op['progress'].get('corrected')}")
    print("search latency (from each search's scheduled start), through the gateway and straight to azure-sim:")
    rows = [("before the move", [l for _, l, _ in baseline.samples], [l for _, l, _ in baseline_direct.samples]),
            ("during the copy", during_copy(probe), during_copy(probe_direct)),
            ("during the move", [l for _, l, _ in probe.samples], [l for _, l, _ in probe_direct.samples])]
    for name, through, straight in rows:
        print(f"  {name:<16} gateway   {percentiles(through)}")
        print(f"  {'':<16} azure-sim {percentiles(straight)}")

    def q(values, p):
        s = sorted(values)
        return s[min(len(s) - 1, int(p * len(s)))] * 1000 if s else float("nan")

    for name, through, straight in rows[:2]:
        print(f"gateway minus azure-sim {name}: p50 {q(through, .5) - q(straight, .5):+.2f} ms, "
              f"p99 {q(through, .99) - q(straight, .99):+.2f} ms")
    print(f"added by the copy to the tenant's searches (gateway during - before): "
          f"p50 {q(rows[1][1], .5) - q(rows[0][1], .5):+.2f} ms, p99 {q(rows[1][1], .99) - q(rows[0][1], .99):+.2f} ms")
    print(f"failed searches: {len(failures)}")
    after_key, after_neighbour = count(client, key), count(client, neighbour)
    print(f"after the move: tenant sees {after_key} (expected {DOCS}), neighbour {after_neighbour} (expected 1000)")
    if failures or after_key != DOCS or after_neighbour != 1000:
        sys.exit(1)


main()
