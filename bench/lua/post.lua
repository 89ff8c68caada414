-- One request over and over: BENCH_METHOD (default POST) <url path> with HTTP Basic admin:admin, no body.
-- BENCH_PREFER (optional) is sent as a Prefer header (Prism picks the response code/example from it;
-- the mock and the bare app ignore it). Every response is counted as "<BENCH_KIND or retry>:<status>".
package.path = (os.getenv("BENCH_LUA_DIR") or ".") .. "/?.lua;" .. package.path
local common = require("common")

function setup(thread) common.setup(thread) end

function init(args)
  counts = {}
  local headers = { ["Authorization"] = common.auth }
  local prefer = os.getenv("BENCH_PREFER")
  if prefer and prefer ~= "" then headers["Prefer"] = prefer end
  local method = os.getenv("BENCH_METHOD")
  if not method or method == "" then method = "POST" end
  kind = os.getenv("BENCH_KIND")
  if not kind or kind == "" then kind = "retry" end
  if method == "POST" or method == "PUT" then
    req = wrk.format(method, wrk.path, headers, "")
  else
    req = wrk.format(method, wrk.path, headers)
  end
end

function request() return req end

function response(status, headers, body)
  local key = kind .. ":" .. status
  counts[key] = (counts[key] or 0) + 1
end

function done(summary, latency, requests) common.done(summary, latency, requests) end
