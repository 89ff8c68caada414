-- The soak (RSS flatness) load: every wrk thread owns ONE connection (run with -t = -c) and one subtask
-- (BENCH_SUBTASKS = "subtaskId:taskId,..."), and cycles through every benchmarked path:
--   PUT re-arm (200) -> POST retry own subtask (200) -> POST retry 10002 (400) -> POST retry 99999 (404)
package.path = (os.getenv("BENCH_LUA_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")

function setup(thread)
  common.setup_owned_subtask(thread)
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
