-- wrk script for bench/run.py: an optional POST body, a count of responses by status,
-- and one machine-readable line at the end.
--
--   BENCH_METHOD=POST BENCH_BODY='a=1&b=2' wrk -s bench/wrk_report.lua ...
--
-- (No request limit: wrk.thread:stop() leaves connected sockets that never send a
-- request until wrk exits, and a gunicorn sync worker blocks on each of them.)

local method = os.getenv("BENCH_METHOD")
local body = os.getenv("BENCH_BODY")

if method then
  wrk.method = method
end
if body then
  wrk.body = body
  wrk.headers["Content-Type"] = "application/x-www-form-urlencoded"
end

local threads = {}

function setup(thread)
  table.insert(threads, thread)
end

statuses = {}

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
  local codes = {}
  for _, thread in ipairs(threads) do
    for code, count in pairs(thread:get("statuses")) do
      codes[code] = (codes[code] or 0) + count
    end
  end
  local parts = {}
  for code, count in pairs(codes) do
    table.insert(parts, string.format('"%d": %d', code, count))
  end
  local errors = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests": %d, "duration_us": %d, "bytes": %d, "p50_us": %d, '
      .. '"p99_us": %d, "mean_us": %.1f, "max_us": %d, "errors": {"connect": %d, '
      .. '"read": %d, "write": %d, "status": %d, "timeout": %d}, "statuses": {%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    latency:percentile(50), latency:percentile(99), latency.mean, latency.max,
    errors.connect, errors.read, errors.write, errors.status, errors.timeout,
    table.concat(parts, ", ")
  ))
end
