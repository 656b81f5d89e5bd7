-- wrk script: POST a plain (non-streaming) ~1 KB chat completion, as a tenant would.
--   BENCH_BODY  path of the JSON body (bench/gateway/body.json)
--   BENCH_KEY   the value of the api-key header (the tenant's bk_... key)
-- At the end it prints one machine-readable line:
--   RESULT rps=<requests/s> p50_us=.. p90_us=.. p99_us=.. p999_us=.. max_us=.. requests=.. non2xx=.. errors=..
local f = assert(io.open(os.getenv("BENCH_BODY") or "body.json", "rb"))
local body = f:read("*a")
f:close()

wrk.method = "POST"
wrk.body = body
wrk.headers["content-type"] = "application/json"
wrk.headers["api-key"] = os.getenv("BENCH_KEY") or "missing"

done = function(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.1f p50_us=%d p90_us=%d p99_us=%d p999_us=%d max_us=%d requests=%d non2xx=%d errors=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency:percentile(99.9), latency.max, summary.requests, e.status,
    e.connect + e.read + e.write + e.timeout))
end
