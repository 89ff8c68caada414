-- The soak (RSS flatness) load: every wrk thread owns ONE connection (run with -t = -c) and one subtask
-- (BENCH_SUBTASKS = "subtaskId:taskId,..."), and cycles through every benchmarked path:
--   PUT re-arm (200) -> POST retry own subtask (200) -> POST retry 10002 (400) -> POST retry 99999 (404)
package.path = (os.getenv("BENCH_LUA_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")

local pairs_list = {}
for item in string.gmatch(os.getenv("BENCH_SUBTASKS") or "", "[^,]+") do
  local sid, tid = string.match(item, "(%d+):(%d+)")
  table.insert(pairs_list, { sid, tid })
end
local next_index = 0

function setup(thread)
  common.setup(thread)
  next_index = next_index + 1
  local p = pairs_list[((next_index - 1) % #pairs_list) + 1]
  thread:set("sid", p[1])
  thread:set("tid", p[2])
end

function init(args)
  counts = {}
  n = 0
  local auth = { ["Authorization"] = common.auth }
  reqs = {
    { "put", wrk.format("PUT", "/__mock/subtasks/" .. sid, { ["Content-Type"] = "application/json" },
                        '{"status":"FAILED","operation":"EXECUTE"}') },
    { "retry", wrk.format("POST", "/api/v2/tasks/instances/" .. tid .. "/subtasks/" .. sid .. "/retry", auth, "") },
    { "refused", wrk.format("POST", "/api/v2/tasks/instances/1000/subtasks/10002/retry", auth, "") },
    { "missing", wrk.format("POST", "/api/v2/tasks/instances/1000/subtasks/99999/retry", auth, "") },
  }
end

function request()
  n = n + 1
  return reqs[((n - 1) % #reqs) + 1][2]
end

function response(status, headers, body)
  local key = reqs[((n - 1) % #reqs) + 1][1] .. ":" .. status
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests) common.done(summary, latency, requests) end
