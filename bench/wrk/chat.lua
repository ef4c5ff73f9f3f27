-- POST an OpenAI chat request; print one JSON summary line at the end.
--   BENCH_MODEL   model name in the body (default "auto")
--   BENCH_KEY     bearer token sent as Authorization (default "bench-key")
--   BENCH_STREAM  "1" to ask for a streamed answer ("stream": true)
--   BENCH_BODY    the whole JSON body, overriding the default
-- Usage: wrk -t1 -c50 -d10s --latency -s bench/wrk/chat.lua http://127.0.0.1:8080/v1/chat/completions
-- wrk itself prints "Non-2xx or 3xx responses: N"; done() below prints the same counts as
-- JSON ("status" counts responses >= 400) so the runner need not scrape the text.

local model = os.getenv("BENCH_MODEL") or "auto"
local key = os.getenv("BENCH_KEY") or "bench-key"
local stream = os.getenv("BENCH_STREAM") == "1" and '"stream":true,' or ""

wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"
wrk.headers["Authorization"] = "Bearer " .. key
wrk.body = os.getenv("BENCH_BODY") or (
  '{"model":"' .. model .. '",' .. stream .. '"messages":['
  .. '{"role":"system","content":"You are a helpful assistant."},'
  .. '{"role":"user","content":"Say hello to the benchmark in one short sentence."}],'
  .. '"temperature":0.2,"max_tokens":64}'
)

-- No response() hook on purpose: it would make wrk hand every response to Lua and slow
-- the load generator down; wrk counts the non-2xx responses itself.

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"connect_errors":%d,"read_errors":%d,"write_errors":%d,"status_errors":%d,'
      .. '"timeouts":%d,"mean_us":%.1f,"p50_us":%d,"p90_us":%d,"p99_us":%d,"max_us":%d}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max
  ))
end
