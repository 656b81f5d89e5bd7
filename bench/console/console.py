"""Driver of bench/console/run.sh: onboards the tenants, seeds their usage rollups, signs in
and times the tenants page. Prints one line per scenario: p50 / p95 / p99 / max in ms."""

import http.client
import json
import statistics
import subprocess
import sys
import time
import urllib.parse

base, token, tenants, requests, database = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
host = urllib.parse.urlparse(base).netloc


def call(method, path, body=None, headers=None):
    conn = http.client.HTTPConnection(host, timeout=60)
    conn.request(method, path, body=body, headers=headers or {})
    response = conn.getresponse()
    data = response.read()
    conn.close()
    return response.status, response.getheader("set-cookie"), data


started = time.monotonic()
admin = {"authorization": f"Bearer {token}", "content-type": "application/json"}
for first in range(0, tenants, 1000):
    batch = [{"slug": f"tenant-{i:05d}", "display_name": f"Tenant {i} Ltd",
              "openai": {"isolation": "shared"} if i % 3 else None}
             for i in range(first, min(first + 1000, tenants))]
    for item in batch:
        if item["openai"] is None:
            del item["openai"]
    status, _, data = call("POST", "/admin/v1/tenants:batch", json.dumps({"tenants": batch}), admin)
    assert status in (200, 201, 207), (status, data[:300])
print(f"onboarded {tenants} tenants in {time.monotonic() - started:.1f} s")

# 30 days of hourly rollups per tenant (two models each), as the ledger would have written.
started = time.monotonic()
seed = """
INSERT INTO usage_hourly (tenant_id, hour, kind, alias, deployment, key_id, requests,
  prompt_tokens, completion_tokens, cached_tokens, documents, errors)
SELECT t.id, h, 'openai', m, 'aoai/' || m, '00000000-0000-0000-0000-000000000000',
  10, 1000, 200, 0, 0, 0
FROM tenants t,
  generate_series(date_trunc('hour', now()) - interval '30 days', date_trunc('hour', now()), interval '1 hour') h,
  (VALUES ('gpt-4o'), ('text-embedding-3-small')) AS models(m);
ANALYZE usage_hourly;
"""
subprocess.run(["psql", "-q", database, "-c", seed], check=True)
rows = subprocess.run(["psql", "-tA", database, "-c", "SELECT count(*) FROM usage_hourly"],
                      check=True, capture_output=True, text=True).stdout.strip()
print(f"seeded {rows} hourly usage rows in {time.monotonic() - started:.1f} s")

status, cookie, _ = call("POST", "/console/login", urllib.parse.urlencode({"token": token}),
                         {"content-type": "application/x-www-form-urlencoded"})
assert status == 303 and cookie, status
session = {"cookie": cookie.split(";")[0]}

scenarios = [
    ("first page", "/console/tenants"),
    ("page 150 of 200", "/console/tenants?page=150"),
    ("search by name", "/console/tenants?q=tenant+4242"),
    ("filter: suspended (none)", "/console/tenants?status=suspended"),
    ("filter: openai shared, page 50", "/console/tenants?placement=openai%3Ashared&page=50"),
    ("tenant page", "/console/tenants/tenant-04242"),
]
print(f"{'scenario':34} {'p50':>8} {'p95':>8} {'p99':>8} {'max':>8}   (ms, {requests} sequential requests)")
for name, path in scenarios:
    for _ in range(5):
        call("GET", path, headers=session)
    times = []
    for _ in range(requests):
        t = time.perf_counter()
        status, _, body = call("GET", path, headers=session)
        times.append((time.perf_counter() - t) * 1000)
        assert status == 200, (path, status)
    times.sort()
    q = lambda p: times[min(len(times) - 1, int(p * len(times)))]
    print(f"{name:34} {statistics.median(times):8.1f} {q(0.95):8.1f} {q(0.99):8.1f} {times[-1]:8.1f}")
