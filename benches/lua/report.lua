-- Appended to every workload script: when wrk finishes, print one line the
-- harness parses. Latencies are in microseconds; errors are socket errors
-- (connect, read, write, timeout); non2xx counts 4xx and 5xx answers.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    "RESULT rps=%.1f p50_us=%d p99_us=%d errors=%d non2xx=%d requests=%d\n",
    summary.requests / (summary.duration / 1e6),
    latency:percentile(50), latency:percentile(99),
    e.connect + e.read + e.write + e.timeout, e.status, summary.requests))
end
