-- wrk script: bench/usages.lua plus a record of the ids in the 201 bodies
-- ({"id": N}), to show how many distinct ids the acknowledged records got.
--
--   wrk -t1 -c50 -d15s --latency -s bench/node-original/ids.lua http://127.0.0.1:3000
--
-- Always tallies statuses (as usages.lua's "count"; "limit=N" works too).
-- "ids_file=PATH" also writes the distinct ids, one a line, to PATH.
-- Before usages.lua's report it prints, machine-readable for scripts/bench.sh:
--   IDS with_id=.. distinct=.. min=.. max=..
-- with_id counts the 201s whose body carried an id.

local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
dofile(dir .. "../usages.lua")

local base_setup, base_init, base_done = setup, init, done
local handles = {}

function setup(thread)
  base_setup(thread)
  table.insert(handles, thread)
end

function init(args)
  local with_count, has_count = {}, false
  -- A per-thread global: done() runs in wrk's main Lua state, which never
  -- sees the script arguments, and reads it back with thread:get().
  ids_file = nil
  for _, a in ipairs(args or {}) do
    if a:match("^ids_file=") then
      ids_file = a:match("^ids_file=(.*)$")
    else
      table.insert(with_count, a)
      if a == "count" or a:match("^limit=") then
        has_count = true
      end
    end
  end
  if not has_count then
    table.insert(with_count, "count")
  end
  base_init(with_count)

  -- Per-thread globals, read back with thread:get() in done().
  ids = {}
  with_id = 0
  local tally = response
  response = function(status, headers, body)
    if status == 201 and body then
      local id = tonumber(body:match('"id"%s*:%s*(%d+)'))
      if id then
        with_id = with_id + 1
        ids[id] = true
      end
    end
    tally(status, headers, body)
  end
end

function done(summary, latency, requests)
  local all, distinct, n = {}, 0, 0
  local lo, hi = nil, nil
  for _, t in ipairs(handles) do
    n = n + (t:get("with_id") or 0)
    for id in pairs(t:get("ids") or {}) do
      if not all[id] then
        all[id] = true
        distinct = distinct + 1
        if not lo or id < lo then lo = id end
        if not hi or id > hi then hi = id end
      end
    end
  end
  io.write(string.format("ids:        %d 201s carried an id; %d distinct ids (%.0f..%.0f)\n",
    n, distinct, lo or 0, hi or 0))
  local path = handles[1] and handles[1]:get("ids_file")
  if path then
    local f = assert(io.open(path, "w"))
    for id in pairs(all) do
      f:write(string.format("%.0f\n", id))
    end
    f:close()
  end
  io.write(string.format("IDS with_id=%d distinct=%d min=%.0f max=%.0f\n", n, distinct, lo or 0, hi or 0))
  base_done(summary, latency, requests)
end
