-- wrk script: plain (non-streaming) chat completions against azure-sim.
wrk.method = "POST"
wrk.headers["content-type"] = "application/json"
wrk.headers["api-key"] = "bench-key"
wrk.body = '{"messages":[{"role":"system","content":"You are a helpful assistant."},{"role":"user","content":"Summarise the plot of Hamlet in two sentences."}],"max_tokens":64}'

local statuses = {}
response = function(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

done = function(summary, latency, requests)
  local non2xx = summary.errors.status
  io.write(string.format("requests/s: %.0f  non-2xx: %d  socket errors: %d\n",
    summary.requests / (summary.duration / 1e6), non2xx,
    summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout))
end
