-- POSTs one AdmissionReview over and over (or GETs the URL); prints the figures the harness reads.
--   PODMUTATE_BENCH_BODY      file holding the request body; unset: GET
--   PODMUTATE_BENCH_DELAY_MS  pause per connection between requests (a fixed rate), 0 for none
local body = os.getenv("PODMUTATE_BENCH_BODY")
if body then
  local file = assert(io.open(body, "rb"))
  wrk.method = "POST"
  wrk.body = file:read("*a")
  file:close()
  wrk.headers["Content-Type"] = "application/json"
end

local pause = tonumber(os.getenv("PODMUTATE_BENCH_DELAY_MS") or "0")

if pause > 0 then
  function delay()
    return pause
  end
end

function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format("RESULT requests=%d errors=%d status=%d duration_us=%d p50=%d p95=%d p99=%d\n",
    summary.requests, e.connect + e.read + e.write + e.timeout, e.status, summary.duration,
    latency:percentile(50), latency:percentile(95), latency:percentile(99)))
end
