-- Shared by the bench scripts: per-thread status counters and one JSON line of results from done().
-- wrk runs one Lua state per thread; setup() (main state) keeps the threads so done() can add up their counters.
local M = {}
M.auth = "Basic YWRtaW46YWRtaW4="  -- admin:admin
M.threads = {}

function M.setup(thread)
  table.insert(M.threads, thread)
end

-- For scripts where every thread owns one subtask: BENCH_SUBTASKS = "subtaskId:taskId,..." in thread order;
-- the thread gets globals sid and tid.
local owned = {}
for item in string.gmatch(os.getenv("BENCH_SUBTASKS") or "", "[^,]+") do
  local sid, tid = string.match(item, "(%d+):(%d+)")
  table.insert(owned, { sid, tid })
end
local next_owned = 0

function M.setup_owned_subtask(thread)
  M.setup(thread)
  next_owned = next_owned + 1
  local p = owned[((next_owned - 1) % #owned) + 1]
  thread:set("sid", p[1])
  thread:set("tid", p[2])
end

local function json_escape(s)
  return (tostring(s):gsub('[%c"\\]', function(c) return string.format("\\u%04x", c:byte()) end))
end

function M.done(summary, latency, requests)
  local counts = {}
  for _, t in ipairs(M.threads) do
    local c = t:get("counts") or {}
    for k, v in pairs(c) do counts[k] = (counts[k] or 0) + v end
  end
  local parts = {}
  for k, v in pairs(counts) do table.insert(parts, string.format('"%s":%d', json_escape(k), v)) end
  local e = summary.errors
  io.write(string.format(
    'BENCH_JSON {"requests":%d,"duration_us":%d,"bytes":%d,' ..
    '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},' ..
    '"latency_us":{"min":%d,"mean":%.1f,"stdev":%.1f,"max":%d,"p50":%d,"p90":%d,"p99":%d,"p999":%d},' ..
    '"counts":{%s}}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.min, latency.mean, latency.stdev, latency.max,
    latency:percentile(50), latency:percentile(90), latency:percentile(99), latency:percentile(99.9),
    table.concat(parts, ",")))
end

return M
