-- wrk script: valid usages mixed with bad requests, so non-2xx are expected.
--
--   wrk -t1 -c64 -d15s --latency -s bench/mixed.lua http://127.0.0.1:3000
--
-- Out of every 20 requests: 10 valid usages (201) and 10 bad ones, each of
-- which busyapi answers without closing the connection:
--   2 malformed JSON (400), 2 unknown field (400), 2 wrong type (400),
--   2 bad timestamp (400), 1 wrong Content-Type (415), 1 unknown path (404).
-- Responses are always tallied by status (response() is always on here),
-- and done() prints how many of each kind were sent next to the statuses
-- that came back. The two differ by at most the requests in flight when
-- wrk stopped, plus any 503 (WAL saturated) the server chose to send.
--
-- Script arguments as in usages.lua; "count" is implied.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

-- kind, weight (of 20), expected status, body builder, content type, path
local VALID = '{"patientId": "%d", "timestamp": "Tue Nov 01 2016 09:11:51 GMT-0500 (CDT)", "medication": "Albuterol"}'
local KINDS = {
  { "valid", 10, 201, function(i) return string.format(VALID, 100 + i) end },
  { "malformed_json", 2, 400, function(i)
    return string.format('{"patientId": "%d", "timestamp": 1478009511000, "medication": "Albuterol"', i)
  end },
  { "unknown_field", 2, 400, function(i)
    return string.format('{"patientId": "%d", "timestamp": 1478009511000, "medication": "Albuterol", "dose": 2}', i)
  end },
  { "wrong_type", 2, 400, function(i)
    return string.format('{"patientId": true, "timestamp": 1478009511000, "medication": ["Albuterol", %d]}', i)
  end },
  { "bad_timestamp", 2, 400, function(i)
    return string.format('{"patientId": "%d", "timestamp": "yesterday at noon", "medication": "Albuterol"}', i)
  end },
  { "wrong_content_type", 1, 415, function(i) return string.format(VALID, 100 + i) end, "text/plain" },
  { "unknown_path", 1, 404, function(i) return string.format(VALID, 100 + i) end, nil, "/api/usage" },
}

-- One full cycle of 20 requests, repeated with varying patientIds.
local POOL_CYCLES = 200

local requests = {}
local kind_of = {}
local next_index = 1

function setup(thread)
  common.setup(thread)
end

function init(args)
  local extended = { "count" }
  for _, a in ipairs(args or {}) do
    if a ~= "count" then
      table.insert(extended, a)
    end
  end
  common.init(extended)
  -- Per-thread: how many of each kind were sent, read back in done().
  sent = {}
  local base = (thread_index or 0) * POOL_CYCLES * 20
  local i = 0
  for _ = 1, POOL_CYCLES do
    for k, kind in ipairs(KINDS) do
      for _ = 1, kind[2] do
        i = i + 1
        requests[i] = wrk.format("POST", kind[6] or "/api/usages",
          { ["Content-Type"] = kind[5] or "application/json" }, kind[4](base + i))
        kind_of[i] = k
      end
    end
  end
  for k = 1, #KINDS do
    sent[k] = 0
  end
end

function request()
  local r = requests[next_index]
  local k = kind_of[next_index]
  sent[k] = sent[k] + 1
  next_index = next_index % #requests + 1
  return r
end

-- Sent per kind (summed over threads), with the status each should get.
local function report_kinds(threads)
  local total = {}
  for _, t in ipairs(threads) do
    for k, n in pairs(t:get("sent") or {}) do
      total[k] = (total[k] or 0) + n
    end
  end
  local expected = {}
  io.write("sent by kind (expected status):\n")
  for k, kind in ipairs(KINDS) do
    local n = total[k] or 0
    io.write(string.format("  %-19s %9d  (%d)\n", kind[1], n, kind[3]))
    expected[kind[3]] = (expected[kind[3]] or 0) + n
  end
  local parts = {}
  for _, status in ipairs({ 201, 400, 404, 415 }) do
    table.insert(parts, string.format("%d x %d", status, expected[status] or 0))
  end
  io.write("expected:   " .. table.concat(parts, ", ") .. " (as sent, including requests in flight at the end)\n")
end

function done(summary, latency, _)
  common.done(summary, latency, "mixed.lua", report_kinds)
end
