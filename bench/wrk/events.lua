-- wrk script for bench/ingest.py: a distinct body on every request.
--
--   wrk ... -s bench/wrk/events.lua URL -- MODE BATCH API_KEY RUN_ID KEY_RATE DUP_RATE SEED
--
-- MODE is "single" (POST /events, one CreateEventRequestBody), "event-batch"
-- (POST /event-batch, {"events": [CreateEventRequestBody...]}) or "capture"
-- (POST /batch, the SDK's buffered {"events": [{api_key, type, body, ...}]}).
-- Of all events, KEY_RATE carry an idempotency key, and DUP_RATE (counted
-- inside KEY_RATE) reuse a key sent recently, so the server must drop them.
-- done() prints one BENCH-COUNTERS line that bench/ingest.py parses.

local threads = {}

function setup(thread)
  thread:set("tid", #threads + 1)
  table.insert(threads, thread)
end

-- per-thread state (each wrk thread has its own Lua state)
local mode, batch, api_key, run_id
local key_rate, dup_rate = 0.5, 0.05
local counter = 0
local ring, ring_size, ring_len, ring_pos = {}, 1024, 0, 0
local subtypes = {
  "api-call", "page-view", "search", "export", "login", "upload", "download", "message",
}
local path = "/events"

-- globals, read back by done() through thread:get
events_sent = 0
keyed_sent = 0
dups_sent = 0

function init(args)
  mode = args[1] or "single"
  batch = tonumber(args[2] or "1")
  api_key = args[3] or ""
  run_id = args[4] or tostring(os.time())
  key_rate = tonumber(args[5] or "0.5")
  dup_rate = tonumber(args[6] or "0.05")
  local seed = tonumber(args[7] or "1")
  math.randomseed(seed + (tid or 1) * 7919)
  if mode == "event-batch" then
    path = "/event-batch"
  elseif mode == "capture" then
    path = "/batch"
  else
    path = "/events"
    batch = 1
  end
  wrk.method = "POST"
  wrk.headers["Content-Type"] = "application/json"
  wrk.headers["X-Schematic-Api-Key"] = api_key
  wrk.headers["User-Agent"] = "tally-bench/wrk"
end

-- 20,000 users, each always in the same one of 1,000 companies (as in
-- bench/ingest.py's prefill)
local function track_body()
  local user = math.random(1, 20000)
  return string.format(
    '{"event":"%s","company":{"id":"co-%d"},"user":{"id":"user-%d"},'
      .. '"traits":{"plan":"pro","region":"eu-west"},"quantity":%d}',
    subtypes[math.random(#subtypes)], user % 1000 + 1, user, math.random(1, 5))
end

-- an idempotency key (a fresh one, a recent one again, or nil)
local function next_key()
  local r = math.random()
  if r < dup_rate and ring_len > 0 then
    dups_sent = dups_sent + 1
    keyed_sent = keyed_sent + 1
    return ring[math.random(ring_len)]
  end
  if r < key_rate then
    counter = counter + 1
    local key = run_id .. "-" .. (tid or 1) .. "-" .. counter
    ring_pos = ring_pos % ring_size + 1
    ring[ring_pos] = key
    if ring_len < ring_size then
      ring_len = ring_len + 1
    end
    keyed_sent = keyed_sent + 1
    return key
  end
  return nil
end

local function one_event(sent_at)
  local key = next_key()
  events_sent = events_sent + 1
  if mode == "capture" then
    -- the SDK leaves absent optional fields out
    local key_part = key and (',"idempotency_key":"' .. key .. '"') or ""
    return '{"api_key":"' .. api_key .. '","type":"track","body":' .. track_body()
      .. key_part .. ',"sent_at":"' .. sent_at .. '"}'
  end
  -- the REST calls send explicit nulls
  local key_part = key and ('"' .. key .. '"') or "null"
  return '{"event_type":"track","body":' .. track_body() .. ',"idempotency_key":' .. key_part
    .. ',"sent_at":"' .. sent_at .. '","trusted_client_clock":null,"backfill":null}'
end

-- wrk calls request() once on the first thread before the run, only to check
-- that it returns a well-formed request; that one is never sent, so it gets a
-- stand-in that leaves the counters and the recent keys alone.
local checked = false

function request()
  if not checked then
    checked = true
    if (tid or 1) == 1 then
      return wrk.format(nil, path, nil, "{}")
    end
  end
  local sent_at = os.date("!%Y-%m-%dT%H:%M:%SZ")
  local body
  if batch == 1 and mode == "single" then
    body = one_event(sent_at)
  else
    local parts = {}
    for i = 1, batch do
      parts[i] = one_event(sent_at)
    end
    body = '{"events":[' .. table.concat(parts, ",") .. ']}'
  end
  return wrk.format(nil, path, nil, body)
end

function done(summary, latency, requests)
  local events, keyed, dups = 0, 0, 0
  for _, thread in ipairs(threads) do
    events = events + (thread:get("events_sent") or 0)
    keyed = keyed + (thread:get("keyed_sent") or 0)
    dups = dups + (thread:get("dups_sent") or 0)
  end
  io.write(string.format(
    "BENCH-COUNTERS events=%d keyed=%d dups=%d status_errors=%d\n",
    events, keyed, dups, summary.errors.status))
end
