-- wrk script for bench/screen_api.sh: POST /v1/screen with a passed call (a fresh, valid
-- callee each request, so per-callee caps never trip and checks.valid passes it), paced by
-- delay() so that the offered rate is about connections * 1000 / DELAY_MS requests per second.
local counter = 0
local threads = 0
-- Each wrk thread runs its own copy of this script: give each its own area code, so that
-- two threads never send the same callee.
local areas = {312, 415, 510, 617, 713, 802, 919, 971}
-- Exchange codes that exist: 200-999 without the N11 service codes.
local exchanges = {}
for x = 200, 999 do
  if x % 100 ~= 11 then table.insert(exchanges, x) end
end

function setup(thread)
  threads = threads + 1
  thread:set("area", areas[(threads - 1) % #areas + 1])
end
local token = os.getenv("SIPGUARD_TOKEN") or ""
local delay_ms = tonumber(os.getenv("DELAY_MS") or "10")

function request()
  counter = counter + 1
  local nxx = exchanges[math.floor(counter / 10000) % #exchanges + 1]
  local body = string.format(
    '{"account":"acme","source_ip":"10.0.0.1","caller":"sip:+12125550100@10.0.0.1",' ..
    '"callee":"sip:+1%03d%03d%04d@carrier","call_id":"wrk-%d-%d-%d"}',
    area or 312, nxx, counter % 10000, area or 312, counter, math.random(1e9))
  return wrk.format("POST", "/v1/screen", {
    ["Content-Type"] = "application/json",
    ["Authorization"] = "Bearer " .. token,
  }, body)
end

function delay()
  return delay_ms
end

local non200 = 0
function response(status, headers, body)
  if status ~= 200 then
    non200 = non200 + 1
  end
end

function done(summary, latency, requests)
  io.write(string.format("requests %d, errors %d, rate %.0f/s\n", summary.requests,
    summary.errors.status + summary.errors.connect + summary.errors.read + summary.errors.write + summary.errors.timeout,
    summary.requests / (summary.duration / 1e6)))
  for _, p in ipairs({50, 90, 99, 99.9}) do
    io.write(string.format("p%g %.3f ms\n", p, latency:percentile(p) / 1000))
  end
end
