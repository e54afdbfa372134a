-- wrk script: POST /api/usages with valid usage events, ~100 bytes each.
--
--   wrk -t1 -c64 -d15s --latency -s bench/usages.lua http://127.0.0.1:3000
--   wrk ... -s bench/usages.lua http://127.0.0.1:3000 -- count         # tally statuses
--   wrk ... -s bench/usages.lua http://127.0.0.1:3000 -- limit=200000  # stop after ~N
--
-- Bodies vary the patientId (strings and integers), the medication and the
-- timestamp form (JavaScript Date.toString(), RFC 3339 with Z, with an
-- offset and milliseconds, a bare date, epoch milliseconds). They are built
-- once in init(): building a request per call costs wrk more than the bare
-- baseline server spends on it. The same script drives the bare baseline
-- (examples/bare_minihttp.rs), which ignores the path and body.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

-- Distinct requests per thread; each thread starts at its own offset, so
-- patientIds differ across threads too.
local POOL_SIZE = 4096

local MEDICATIONS = { "Albuterol", "Levalbuterol", "Fluticasone", "Budesonide", "Ipratropium" }
-- Days of November 2016 with their weekday, so the JavaScript form is valid.
local DAYS = { { 1, "Tue" }, { 2, "Wed" }, { 3, "Thu" }, { 4, "Fri" }, { 5, "Sat" }, { 6, "Sun" }, { 7, "Mon" } }

-- The timestamp of request i, as a JSON value, cycling through the forms.
local function timestamp(i)
  local day = DAYS[i % #DAYS + 1]
  local h, m, s = (i * 7) % 24, (i * 13) % 60, (i * 31) % 60
  local form = i % 5
  if form == 0 then
    return string.format('"%s Nov %02d 2016 %02d:%02d:%02d GMT-0500 (CDT)"', day[2], day[1], h, m, s)
  elseif form == 1 then
    return string.format('"2016-11-%02dT%02d:%02d:%02dZ"', day[1], h, m, s)
  elseif form == 2 then
    return string.format('"2016-11-%02dT%02d:%02d:%02d.%03d-05:00"', day[1], h, m, s, i % 1000)
  elseif form == 3 then
    return string.format('"2016-11-%02d"', day[1])
  else
    -- 2016-11-01T00:00:00Z plus a few days' worth of milliseconds.
    return string.format("%d", 1477958400000 + (i * 1000003) % (7 * 86400000))
  end
end

-- The body of request i; every third patientId is a JSON integer.
local function body(i)
  local patient
  if i % 3 == 0 then
    patient = string.format("%d", 100 + i)
  else
    patient = string.format('"%d"', 100 + i)
  end
  return string.format('{"patientId": %s, "timestamp": %s, "medication": "%s"}',
    patient, timestamp(i), MEDICATIONS[i % #MEDICATIONS + 1])
end

local requests = {}
local next_index = 1

function setup(thread)
  common.setup(thread)
end

function init(args)
  local opts = common.init(args)
  local headers = { ["Content-Type"] = "application/json" }
  if opts.key then
    headers["Authorization"] = "Bearer " .. opts.key
  end
  local base = (thread_index or 0) * POOL_SIZE
  for k = 1, POOL_SIZE do
    requests[k] = wrk.format("POST", "/api/usages", headers, body(base + k))
  end
end

function request()
  local r = requests[next_index]
  next_index = next_index % POOL_SIZE + 1
  return r
end

function done(summary, latency, _)
  common.done(summary, latency, "usages.lua")
end
