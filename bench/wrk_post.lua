-- wrk script: POST events to Ciclo (or a baseline), each for a customer id not used before.
-- Arguments after `--`: API key ("" for none), customer id prefix, events per request
-- (0 = one bare event, the body of POST /v1/events; N = {"events":[...N events...]}), and
-- optionally the path of a file whose content is POSTed as is, every time (a fixed body: the
-- dispatch benchmark's provider request).
-- done() prints one line "WRK_JSON {...}" that bench/load.py parses: wrk's summary, latency
-- percentiles, the count of each HTTP status and the start of the first non-2xx answer.

thread_id = 0 -- set per thread by setup()
statuses = {} -- HTTP status -> count, per thread
first_error = "" -- status and body of the first non-2xx answer, per thread

local threads = {}
local key, prefix, batch, fixed
local counter = 0

function setup(thread)
  thread:set("thread_id", #threads)
  table.insert(threads, thread)
end

function init(args)
  key = args[1] or ""
  prefix = (args[2] or "c") .. "-" .. tostring(thread_id) .. "-"
  batch = tonumber(args[3]) or 0
  if args[4] and args[4] ~= "" then
    local file = assert(io.open(args[4], "rb"))
    fixed = file:read("*a")
    file:close()
  end
  wrk.headers["Content-Type"] = "application/json"
  if key ~= "" then
    wrk.headers["Authorization"] = "Bearer " .. key
  end
end

local function event(n)
  return string.format(
    '{"type":"page_viewed","customer_id":"%s%d","properties":{"path":"/p"}}', prefix, n)
end

function request()
  local body
  if fixed then
    body = fixed
  elseif batch == 0 then
    counter = counter + 1
    body = event(counter)
  else
    local parts = {}
    for i = 1, batch do
      counter = counter + 1
      parts[i] = event(counter)
    end
    body = '{"events":[' .. table.concat(parts, ",") .. ']}'
  end
  return wrk.format("POST", nil, nil, body)
end

function response(status, headers, body)
  statuses[status] = (statuses[status] or 0) + 1
  if (status < 200 or status > 299) and first_error == "" then
    first_error = tostring(status) .. " " .. string.sub(body or "", 1, 300)
  end
end

local function json_string(text)
  return '"' .. string.gsub(text, '[%c"\\]', function(c)
    return string.format("\\u%04x", string.byte(c))
  end) .. '"'
end

function done(summary, latency, requests)
  local counts, sample = {}, ""
  for _, thread in ipairs(threads) do
    for status, n in pairs(thread:get("statuses")) do
      counts[status] = (counts[status] or 0) + n
    end
    if sample == "" then
      sample = thread:get("first_error")
    end
  end
  local parts = {}
  for status, n in pairs(counts) do
    table.insert(parts, string.format('"%d":%d', status, n))
  end
  local e = summary.errors
  io.write(string.format(
    'WRK_JSON {"requests":%d,"duration_us":%d,"bytes":%d,'
      .. '"errors":{"connect":%d,"read":%d,"write":%d,"status":%d,"timeout":%d},'
      .. '"latency_us":{"mean":%.1f,"p50":%d,"p90":%d,"p99":%d,"max":%d},'
      .. '"statuses":{%s},"first_error":%s}\n',
    summary.requests, summary.duration, summary.bytes,
    e.connect, e.read, e.write, e.status, e.timeout,
    latency.mean, latency:percentile(50), latency:percentile(90), latency:percentile(99),
    latency.max, table.concat(parts, ","), json_string(sample)))
end
