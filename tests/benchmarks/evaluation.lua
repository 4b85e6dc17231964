-- wrk script for tests/benchmarks/evaluation.py: every request asks for a new user.
-- Arguments (after --): mode (get | ofrep | bulk), flag key, bearer token ("" for none).
local counter = 0
local mode, flag

function init(args)
  mode, flag = args[1], args[2]
  if args[3] and args[3] ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. args[3]
  end
  if mode ~= "get" then
    wrk.headers["Content-Type"] = "application/json"
  end
  -- Threads start far apart, so no two ask for the same user.
  counter = math.random(0, 2000000000)
end

function request()
  counter = counter + 1
  local user = "user-" .. counter
  if mode == "get" then
    return wrk.format("GET", "/api/v1/evaluate/" .. flag .. "?targetingKey=" .. user)
  end
  local body = '{"context":{"targetingKey":"' .. user .. '"}}'
  if mode == "ofrep" then
    return wrk.format("POST", "/ofrep/v1/evaluate/flags/" .. flag, nil, body)
  end
  return wrk.format("POST", "/ofrep/v1/evaluate/flags", nil, body)
end

-- One machine-readable line for the harness.
function done(summary, latency, requests)
  local e = summary.errors
  io.write(string.format(
    'WRK_RESULT {"requests":%d,"duration_us":%d,"p50_us":%d,"p99_us":%d,' ..
    '"non_2xx":%d,"socket_errors":%d}\n',
    summary.requests, summary.duration, latency:percentile(50), latency:percentile(99),
    e.status, e.connect + e.read + e.write + e.timeout))
end
