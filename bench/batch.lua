-- wrk script: batch POSTs to /api/usages, a JSON array of `size` usages
-- (~100 bytes each) per request, every usage with an eventId of its own.
--
--   wrk -t1 -c64 -d15s --latency -s bench/batch.lua http://127.0.0.1:3000 -- size=100
--   wrk ... -- size=100 count     # also tally statuses (common.lua's arguments)
--
-- size=1 sends a one-usage array (the batch path); the single-POST figure
-- beside it comes from bench/usages.lua. Requests are built once in
-- init(), as usages.lua does: building a 100 KiB body per call would cost
-- wrk more than busyapi spends on it. The pool of requests is reused, so
-- an eventId comes around again after POOL_USAGES others: more than the
-- retry window holds (65,536), so a repeat is a miss and is written like
-- a new event (what matters here is the write path; a hit would write
-- nothing and flatter the figures).

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

-- Usages built per thread in all, whatever the batch size: twice the retry
-- window, so a repeated eventId has always been evicted (a miss), and
-- about 15 MB of request bodies, built in well under a second.
local POOL_USAGES = 131072
local MEDICATIONS = { "Albuterol", "Levalbuterol", "Fluticasone", "Budesonide", "Ipratropium" }

local function usage(i)
  return string.format(
    '{"patientId": "%d", "timestamp": %d, "medication": "%s", "eventId": "b-%d-%d"}',
    100 + i % 100000, 1477958400000 + (i * 1000003) % (7 * 86400000),
    MEDICATIONS[i % #MEDICATIONS + 1], thread_index or 0, i)
end

local requests = {}
setup = common.setup
request = common.cycle(requests)

-- Splits `size=N` off the arguments; common.lua takes the rest.
local function batch_size(args)
  local size, rest = 100, {}
  for _, a in ipairs(args or {}) do
    local n = a:match("^size=(%d+)$")
    if n then
      size = tonumber(n)
    else
      table.insert(rest, a)
    end
  end
  return size, rest
end

function init(args)
  local size, rest = batch_size(args)
  common.init(rest)
  local i = 0
  for k = 1, math.max(1, math.floor(POOL_USAGES / size)) do
    local parts = {}
    for j = 1, size do
      i = i + 1
      parts[j] = usage(i)
    end
    requests[k] = wrk.format("POST", "/api/usages",
      { ["Content-Type"] = "application/json" }, "[" .. table.concat(parts, ", ") .. "]")
  end
end

function done(summary, latency, _)
  common.done(summary, latency, "batch.lua")
end
