-- wrk script for bench/pipeline.py: single-event POST /events at a set pace.
--
--   wrk ... -s bench/wrk/paced.lua URL -- API_KEY DELAY_MS RUN_ID
--
-- Each connection waits DELAY_MS before each request, so that C connections
-- send about C * 1000 / (DELAY_MS + latency) events a second. Half of the
-- events carry an idempotency key; 5% of those reuse a recent one.

local api_key, delay_ms, run_id
local counter = 0
local ring, ring_len = {}, 0
local subtypes = { "api-call", "page-view", "search", "export" }

function init(args)
  api_key = args[1] or ""
  delay_ms = tonumber(args[2] or "0")
  run_id = args[3] or tostring(os.time())
  math.randomseed(os.time() + math.floor(os.clock() * 1000000))
  wrk.method = "POST"
  wrk.path = "/events"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Schematic-Api-Key"] = api_key
end

function delay()
  return delay_ms
end

function request()
  local key = ""
  local r = math.random()
  if r < 0.025 and ring_len > 0 then
    key = string.format(',"idempotency_key":"%s"', ring[math.random(ring_len)])
  elseif r < 0.5 then
    counter = counter + 1
    local k = run_id .. "-" .. counter .. "-" .. math.random(1000000000)
    ring_len = math.min(ring_len + 1, 512)
    ring[(counter % 512) + 1] = k
    key = string.format(',"idempotency_key":"%s"', k)
  end
  local company = math.random(1, 1000) -- 1,000 companies of 20 users each
  local body = string.format(
    '{"event_type":"track","body":{"event":"%s","company":{"id":"co-%d"},'
      .. '"user":{"id":"user-%d-%d"},"quantity":%d}%s}',
    subtypes[math.random(#subtypes)], company, company, math.random(1, 20),
    math.random(1, 5), key)
  return wrk.format(nil, nil, nil, body)
end
