-- wrk script for the plain segment-fetch mode (raw proxy cost).
-- Environment: FPB_PATHS = space-separated request paths (rotated per request),
--              FPB_DELAY_MS = optional wait between requests per connection (pacing),
--              FPB_UA = User-Agent (admitted beforehand for auth peers).
-- done() prints one JSON line prefixed "FPB_JSON " for the runner.
local paths = {}
for p in string.gmatch(os.getenv("FPB_PATHS") or "/", "%S+") do paths[#paths + 1] = p end
local ua = os.getenv("FPB_UA") or "wrk"
-- FPB_DELAY_MS (optional): the wait before each request on a connection (--rate pacing).
local delay_ms = tonumber(os.getenv("FPB_DELAY_MS") or "0") or 0
if delay_ms > 0 then
   function delay()
      return delay_ms
   end
end
local counter = 0

function setup(thread)
   thread:set("id", counter)
   counter = counter + 1
end

function init(args)
   i = id
end

function request()
   i = i + 1
   return wrk.format("GET", paths[(i % #paths) + 1], { ["User-Agent"] = ua })
end

function done(summary, latency, requests)
   local e = summary.errors
   io.write(string.format(
      'FPB_JSON {"requests":%d,"bytes":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d,' ..
      '"lat_p50_us":%d,"lat_p95_us":%d,"lat_p99_us":%d,"lat_max_us":%d}\n',
      summary.requests, summary.bytes, summary.duration, e.connect, e.read, e.write, e.status, e.timeout,
      latency:percentile(50), latency:percentile(95), latency:percentile(99), latency.max))
end
