-- wrk script for vorchd's benchmark harness (bench/run.py drives it; see bench/README.md).
--
--   wrk -t2 -c16 -d10s --timeout 30s -s bench/wrk.lua http://127.0.0.1:PORT -- \
--       mode=create instance_type=1 image_id=1 prefix=b limit=5000 markers=DIR
--   wrk ... -s bench/wrk.lua URL -- mode=paths paths=FILE [limit=N] [markers=DIR]
--
-- mode=create sends /vm/create with a distinct name per request: <prefix><thread>-<n>.
-- mode=paths cycles through the request paths in FILE (one a line), each thread from
-- its own offset.
--
-- limit=N: each thread stops once it has N/threads answers (rounded up) and, when
-- markers=DIR is given, creates DIR/<thread> so the harness can end wrk at once with
-- SIGINT (wrk's main thread otherwise sleeps out the whole -d).
--
-- done() prints one line, "VBENCH {json}": answers, ok answers (a positive vmid for
-- creates; anything but a bare 0 for reads), refusals, the wall time from the first
-- request to the last answer (CLOCK_MONOTONIC through the FFI, so a run cut short by
-- its limit still gives a true rate) and wrk's latency percentiles in microseconds.

local ffi = require("ffi")
pcall(ffi.cdef, [[
typedef struct { long tv_sec; long tv_nsec; } vbench_timespec;
int clock_gettime(int clk_id, vbench_timespec *tp);
]])
local ts = ffi.new("vbench_timespec")
local CLOCK_MONOTONIC = 1

local function now()
  ffi.C.clock_gettime(CLOCK_MONOTONIC, ts)
  return tonumber(ts.tv_sec) + tonumber(ts.tv_nsec) / 1e9
end

local threads = {}
local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("thread_id", thread_count)
  table.insert(threads, thread)
end

local function options(args)
  local o = {}
  for _, a in ipairs(args) do
    local k, v = a:match("^([%w_]+)=(.*)$")
    if k then
      o[k] = v
    end
  end
  return o
end

function init(args)
  local o = options(args)
  mode = o.mode or "paths"
  local total = tonumber(o.limit or "0")
  local nthreads = tonumber(o.threads or "1")
  limit = 0
  if total > 0 then
    limit = math.ceil(total / nthreads)
  end
  marker = nil
  if o.markers then
    marker = o.markers .. "/" .. thread_id
  end
  answered, ok, refused, sent = 0, 0, 0, 0
  first, last = 0, 0
  stopped = false
  if mode == "create" then
    prefix = (o.prefix or "b") .. thread_id .. "-"
    tail = "&instance_type=" .. (o.instance_type or "1") .. "&image_id=" .. (o.image_id or "1")
  else
    paths = {}
    for line in io.lines(o.paths) do
      if #line > 0 then
        table.insert(paths, line)
      end
    end
    offset = ((thread_id - 1) * 7919) % #paths
  end
end

function request()
  if first == 0 then
    first = now()
  end
  sent = sent + 1
  if mode == "create" then
    return wrk.format("GET", "/vm/create?name=" .. prefix .. sent .. tail)
  end
  return wrk.format("GET", paths[(sent + offset) % #paths + 1])
end

function response(status, headers, body)
  answered = answered + 1
  last = now()
  if mode == "create" then
    local v = body:match('"vmid":%s*(%d+)')
    if status == 200 and v and tonumber(v) > 0 then
      ok = ok + 1
    else
      refused = refused + 1
    end
  elseif status == 200 and body ~= "0" then
    ok = ok + 1
  else
    refused = refused + 1
  end
  if limit > 0 and answered >= limit and not stopped then
    stopped = true
    if marker then
      local f = io.open(marker, "w")
      if f then
        f:close()
      end
    end
    wrk.thread:stop()
  end
end

function done(summary, latency, requests)
  local a, o, r, s = 0, 0, 0, 0
  local f, l = nil, 0
  for _, t in ipairs(threads) do
    a = a + t:get("answered")
    o = o + t:get("ok")
    r = r + t:get("refused")
    s = s + t:get("sent")
    local tf, tl = t:get("first"), t:get("last")
    if tf > 0 and (f == nil or tf < f) then
      f = tf
    end
    if tl > l then
      l = tl
    end
  end
  local elapsed = 0
  if f ~= nil and l > f then
    elapsed = l - f
  end
  local e = summary.errors
  io.write(string.format(
    'VBENCH {"answered": %d, "ok": %d, "refused": %d, "sent": %d, "elapsed": %.6f, '
      .. '"wrk_requests": %d, "wrk_duration_us": %d, "p50_us": %d, "p90_us": %d, '
      .. '"p99_us": %d, "max_us": %d, "mean_us": %.1f, "errors": {"connect": %d, '
      .. '"read": %d, "write": %d, "status": %d, "timeout": %d}}\n',
    a, o, r, s, elapsed, summary.requests, summary.duration,
    latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, latency.mean, e.connect, e.read, e.write, e.status, e.timeout
  ))
end
