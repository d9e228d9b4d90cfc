-- wrk script for tools/bench/load-test.sh: POST /v1/classify with one review-like text per request,
-- count answers by status in every thread, print totals and latency percentiles as key=value.
-- WRK_DELAY_MS (optional) paces each connection: the offered rate is connections*1000/delay.
wrk.method = "POST"
wrk.headers["Content-Type"] = "application/json"

local texts = {
  "I loved this film, the acting was superb and the story kept me hooked until the very end",
  "A dull, lifeless waste of two hours with characters I could not care about at all",
  "The soundtrack is wonderful but the plot falls apart in the second half",
  "One of the most moving and beautifully shot dramas of the year",
  "Predictable, loud and far too long; even the stars look bored",
  "A clever, funny script that never talks down to its audience",
  "The director has nothing new to say and says it slowly",
  "Warm, generous and surprisingly wise about growing old",
}

counts = {}
local n = 0
local pace = tonumber(os.getenv("WRK_DELAY_MS") or "")

request = function()
  n = n + 1
  return wrk.format(nil, nil, nil, '{"texts":["' .. texts[(n % #texts) + 1] .. '"]}')
end

response = function(status, headers, body)
  counts[status] = (counts[status] or 0) + 1
end

if pace then
  delay = function() return pace end
end

local threads = {}
setup = function(thread) table.insert(threads, thread) end

done = function(summary, latency, requests)
  local total = {}
  for _, t in ipairs(threads) do
    for status, c in pairs(t:get("counts")) do total[status] = (total[status] or 0) + c end
  end
  local statuses = {}
  for status, c in pairs(total) do table.insert(statuses, status .. ":" .. c) end
  table.sort(statuses)
  local e = summary.errors
  io.write(string.format("requests=%d\n", summary.requests))
  io.write(string.format("seconds=%.3f\n", summary.duration / 1e6))
  io.write(string.format("rps=%.1f\n", summary.requests / (summary.duration / 1e6)))
  io.write(string.format("statuses=%s\n", table.concat(statuses, ",")))
  io.write(string.format("socket_errors=%d\n", e.connect + e.read + e.write + e.timeout))
  io.write(string.format("p50_ms=%.1f\n", latency:percentile(50) / 1000))
  io.write(string.format("p99_ms=%.1f\n", latency:percentile(99) / 1000))
  io.write(string.format("max_ms=%.1f\n", latency.max / 1000))
end
