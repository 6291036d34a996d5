-- wrk script for bench/load.py, which prepends RUN, PATH, BODY, HEADERS and PERCENTILES.
-- Every request is a POST whose Idempotency-Key and body carry an id unique to the run, thread and request.
-- done() prints one "BENCH_JSON {...}" line that bench/load.py parses.

local thread_count = 0

function setup(thread)
  thread_count = thread_count + 1
  thread:set("tid", thread_count)
end

function init(args)
  counter = 0
  -- split the body template once, so each request is two concatenations (no pattern escaping either)
  local at = string.find(BODY, "@ID@", 1, true)
  if at then
    body_pre, body_post = string.sub(BODY, 1, at - 1), string.sub(BODY, at + 4)
  else
    body_pre, body_post = BODY, nil
  end
  headers = {}
  for k, v in pairs(HEADERS) do headers[k] = v end
end

function request()
  counter = counter + 1
  local id = RUN .. "-" .. tid .. "-" .. counter
  headers["Idempotency-Key"] = id
  local body = body_pre
  if body_post then body = body_pre .. id .. body_post end
  return wrk.format("POST", PATH, headers, body)
end

function done(summary, latency, requests)
  local e = summary.errors
  local errors = e.connect + e.read + e.write + e.status + e.timeout
  local values = {}
  for i, p in ipairs(PERCENTILES) do values[i] = string.format("%d", latency:percentile(p)) end
  io.write(string.format('BENCH_JSON {"requests": %d, "duration_us": %d, "errors": %d, "percentiles_us": [%s]}\n',
    summary.requests, summary.duration, errors, table.concat(values, ", ")))
end
