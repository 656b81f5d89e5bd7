"""bench/hostile/run.sh's client: `setup` (a tenant and its key), `load` (4 threads sending
worst-case 1 MB bodies to /v1/tokenize until DURATION is over) and `probe` (GET /healthz on a
fresh connection every 10 ms; p50 / p99 / max)."""

import http.client
import json
import os
import random
import string
import sys
import threading
import time

HOST, PORT = os.environ["BASE"].removeprefix("http://").split(":")
DURATION = float(os.environ.get("DURATION", "20"))


def call(method, path, body=None, headers=None):
    c = http.client.HTTPConnection(HOST, int(PORT), timeout=60)
    c.request(method, path, body=json.dumps(body) if body is not None else None, headers=headers or {})
    r = c.getresponse()
    data = r.read()
    c.close()
    return r.status, data


def pct(values, q):
    return values[min(len(values) - 1, int(q * len(values)))]


def setup():
    admin = {"Authorization": "Bearer " + os.environ["ADMIN"], "Content-Type": "application/json"}
    # A tenant on a shared pool; /v1/tokenize counts locally, the resource is never called.
    call("POST", "/admin/v1/openai/resources", {"name": "aoai", "endpoint": "http://127.0.0.1:9/r/aoai",
         "region": "eastus", "api_key": "k"}, admin)
    call("POST", "/admin/v1/openai/deployments", {"resource": "aoai", "name": "gpt-4o", "model": "gpt-4o",
         "capacity_tpm": 1000}, admin)
    call("POST", "/admin/v1/openai/pools", {"alias": "gpt-4o", "members": [{"deployment": "aoai/gpt-4o"}]}, admin)
    call("POST", "/admin/v1/tenants", {"slug": "bench", "display_name": "Bench",
         "openai": {"isolation": "shared"}}, admin)
    _, key = call("POST", "/admin/v1/tenants/bench/keys", {"name": "k", "scope": "read"}, admin)
    print(json.loads(key)["key"])


def load():
    rng = random.Random(7)
    n = 1_000_000
    texts = {
        "one letter": "a" * n,
        "random letters": "".join(rng.choice(string.ascii_lowercase) for _ in range(n)),
        "mixed scripts": "".join(rng.choice("aZé漢字Ωж🙂ß, .-_'1") for _ in range(n // 2)),
    }
    bodies = {name: json.dumps({"model": "gpt-4o", "messages": [{"role": "user", "content": t}]}).encode()
              for name, t in texts.items()}
    stop = time.monotonic() + DURATION
    times = {name: [] for name in bodies}
    statuses = {}
    lock = threading.Lock()

    def client(i):
        names = list(bodies)
        c = http.client.HTTPConnection(HOST, int(PORT), timeout=60)
        j = i
        while time.monotonic() < stop:
            name = names[j % len(names)]
            j += 1
            started = time.monotonic()
            c.request("POST", "/v1/tokenize", body=bodies[name],
                      headers={"api-key": os.environ["KEY"], "Content-Type": "application/json"})
            r = c.getresponse()
            r.read()
            with lock:
                times[name].append(time.monotonic() - started)
                statuses[r.status] = statuses.get(r.status, 0) + 1

    threads = [threading.Thread(target=client, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    print(f"worst-case /v1/tokenize answers by status: {statuses}")
    for name, values in times.items():
        if values:
            ms = sorted(v * 1000 for v in values)
            print(f"  {name}: {len(ms)} calls, p50 {pct(ms, 0.5):.0f} ms, max {ms[-1]:.0f} ms "
                  "(request time: upload, queueing and counting)")


def probe():
    time.sleep(1)  # let the load start
    stop = time.monotonic() + DURATION - 2
    probes = []
    while time.monotonic() < stop:
        started = time.monotonic()
        status, _ = call("GET", "/healthz")
        probes.append((time.monotonic() - started, status))
        time.sleep(0.01)
    lat = sorted(p[0] * 1000 for p in probes)
    print(f"/healthz probes during the load: {len(lat)}, all 200: {all(p[1] == 200 for p in probes)}")
    print(f"  p50 {pct(lat, 0.5):.2f} ms, p99 {pct(lat, 0.99):.2f} ms, max {lat[-1]:.2f} ms")


{"setup": setup, "load": load, "probe": probe}[sys.argv[1]]()
