-- Shared by the wrk scripts in bench/: script arguments, the status tally,
-- the per-thread bookkeeping and the end-of-run report.
--
-- Loaded with dofile() from each script, so it runs once in every wrk Lua
-- environment: the setup/done one and one per thread.
--
-- Script arguments (after wrk's own, behind "--"):
--   count      tally every response by status in response(). Costs wrk some
--              throughput (it must hand headers and body to Lua), so the
--              pure-throughput modes leave it off and rely on wrk's own
--              count of statuses above 399.
--   limit=N    stop after about N responses in all (each thread stops after
--              its share); implies count. wrk itself only knows durations.
--   key=KEY    send `Authorization: Bearer KEY` (the auth mode).
--
-- The last line of the report is machine-readable, for scripts/bench.sh:
--   BENCH rps=.. p50_ms=.. p90_ms=.. p99_ms=.. requests=.. non2xx=.. n201=.. socket_errors=..
-- n201 is -1 when responses were not tallied.

local common = {}

-- Every thread handle, in the setup/done environment (see setup()).
local threads = {}

-- Parses "count" and "limit=N" from wrk's script arguments.
function common.parse_args(args)
  local opts = { count = false, limit = nil, key = nil }
  for _, a in ipairs(args or {}) do
    if a == "count" then
      opts.count = true
    elseif a:match("^limit=%d+$") then
      opts.limit = tonumber(a:match("^limit=(%d+)$"))
      opts.count = true
    elseif a:match("^key=.+$") then
      opts.key = a:match("^key=(.+)$")
    else
      error("unknown script argument '" .. a .. "' (expected count, limit=N or key=KEY)")
    end
  end
  return opts
end

-- Gives each thread an index (0-based) so their request pools start at
-- different places, tells every thread how many there are (for limit=N),
-- and keeps the handle for done(). wrk calls setup() for every thread
-- before any of them runs, so the last call leaves the final count
-- everywhere.
function common.setup(thread)
  thread:set("thread_index", #threads)
  table.insert(threads, thread)
  for _, t in ipairs(threads) do
    t:set("thread_count", #threads)
  end
end

-- Called from a script's init(args): sets up the per-thread globals that
-- done() reads back, and installs response() only when tallying, because a
-- nil response global lets wrk skip handing responses to Lua.
function common.init(args)
  local opts = common.parse_args(args)
  -- Per-thread globals, read back with thread:get() in done().
  counting = opts.count
  statuses = {}
  responses = 0
  limit_total = opts.limit
  thread_limit = nil
  if opts.count then
    response = common.tally
  else
    response = nil
  end
  return opts
end

-- response(): count the status, and stop this thread at its limit.
function common.tally(status)
  statuses[status] = (statuses[status] or 0) + 1
  responses = responses + 1
  if limit_total then
    -- thread_count is complete only once every thread is set up.
    thread_limit = thread_limit or math.ceil(limit_total / (thread_count or 1))
    if responses >= thread_limit then
      wrk.thread:stop()
    end
  end
end

-- A request() that hands out the elements of `list` in turn, from the
-- first again after the last; `list` may be filled after this call (in
-- init()).
function common.cycle(list)
  local at = 0
  return function()
    at = at % #list + 1
    return list[at]
  end
end

local function ms(us)
  return us / 1000.0
end

-- done(): prints the human summary and the BENCH line. `extra` (optional)
-- is called with the thread list to print script-specific lines first.
function common.done(summary, latency, script_name, extra)
  local counted = false
  local by_status = {}
  for _, t in ipairs(threads) do
    if t:get("counting") then
      counted = true
      for status, n in pairs(t:get("statuses") or {}) do
        by_status[status] = (by_status[status] or 0) + n
      end
    end
  end
  if extra then
    extra(threads)
  end

  local seconds = summary.duration / 1e6
  local rps = summary.requests / seconds
  local e = summary.errors
  local socket_errors = e.connect + e.read + e.write + e.timeout
  local n201, non2xx = -1, e.status
  io.write(string.format("---- %s summary ----\n", script_name))
  io.write(string.format("requests:   %d in %.2f s = %.1f req/s\n", summary.requests, seconds, rps))
  io.write(string.format("latency:    p50 %.3f ms, p90 %.3f ms, p99 %.3f ms, p99.9 %.3f ms, max %.3f ms\n",
    ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    ms(latency:percentile(99.9)), ms(latency.max)))
  if counted then
    local keys = {}
    for status in pairs(by_status) do
      table.insert(keys, status)
    end
    table.sort(keys)
    local parts, two = {}, 0
    for _, status in ipairs(keys) do
      table.insert(parts, string.format("%d x %d", status, by_status[status]))
      if status >= 200 and status < 300 then
        two = two + by_status[status]
      end
    end
    n201 = by_status[201] or 0
    non2xx = summary.requests - two
    io.write(string.format("statuses:   %s\n", #parts > 0 and table.concat(parts, ", ") or "(none)"))
    io.write(string.format("201s:       %d\n", n201))
    io.write(string.format("non-2xx:    %d\n", non2xx))
  else
    io.write(string.format("non-2xx:    %d (wrk's count of statuses > 399; pass '-- count' for a full tally)\n", non2xx))
  end
  io.write(string.format("socket errors: connect %d, read %d, write %d, timeout %d\n",
    e.connect, e.read, e.write, e.timeout))
  io.write(string.format(
    "BENCH rps=%.1f p50_ms=%.3f p90_ms=%.3f p99_ms=%.3f requests=%d non2xx=%d n201=%d socket_errors=%d\n",
    rps, ms(latency:percentile(50)), ms(latency:percentile(90)), ms(latency:percentile(99)),
    summary.requests, non2xx, n201, socket_errors))
end

return common
