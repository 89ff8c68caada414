-- The retry success path, kept repeatable: every wrk thread owns ONE connection (run with -t = -c) and one
-- subtask of its own (BENCH_SUBTASKS = "subtaskId:taskId,..." in thread order), and alternates
--   PUT  /__mock/subtasks/{id} {"status":"FAILED","operation":"EXECUTE"}   (re-arm: admin API, a write)
--   POST /api/v2/tasks/instances/{task}/subtasks/{id}/retry                (the retry: 200, a write)
-- One connection per thread means requests on it are strictly sequential, so every retry follows its own
-- re-arm and must be a 200. wrk's req/s and latency cover BOTH requests; counts are split by kind.
package.path = (os.getenv("BENCH_LUA_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")

function setup(thread)
  common.setup_owned_subtask(thread)
end

function init(args)
  counts = {}
  n = 0
  put = wrk.format("PUT", "/__mock/subtasks/" .. sid, { ["Content-Type"] = "application/json" },
                   '{"status":"FAILED","operation":"EXECUTE"}')
  post = wrk.format("POST", "/api/v2/tasks/instances/" .. tid .. "/subtasks/" .. sid .. "/retry",
                    { ["Authorization"] = common.auth }, "")
end

function request()
  n = n + 1
  if n % 2 == 1 then return put end
  return post
end

function response(status, headers, body)
  local key = ((n % 2 == 1) and "put:" or "retry:") .. status
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests) common.done(summary, latency, requests) end
