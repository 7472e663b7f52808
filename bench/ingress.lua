-- wrk script for bench/ingress.py: a signed GitHub push with a unique delivery id per
-- request, and a count of the answers by status code.
--
-- The body stays the same, so its X-Hub-Signature-256 is computed once (by the caller);
-- only X-GitHub-Delivery changes. The request text is built once around that header and
-- each request only joins three strings, so that wrk spends as little CPU as it can on
-- the 2 cores it shares with the servers.
--
-- Environment: BENCH_BODY_FILE (the body), BENCH_SIGNATURE (its sha256=... header),
-- BENCH_RUN (makes delivery ids unique across runs), BENCH_PATH (the URL path).

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_number", #threads)
end

local head, tail, prefix
local sent = 0
statuses = {}

function init(args)
   local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
   local body = file:read("*a")
   file:close()
   local host = wrk.host .. ":" .. wrk.port
   head = "POST " .. os.getenv("BENCH_PATH") .. " HTTP/1.1\r\n"
      .. "Host: " .. host .. "\r\n"
      .. "User-Agent: GitHub-Hookshot/bench\r\n"
      .. "Content-Type: application/json\r\n"
      .. "X-GitHub-Event: push\r\n"
      .. "X-Hub-Signature-256: " .. os.getenv("BENCH_SIGNATURE") .. "\r\n"
      .. "Content-Length: " .. #body .. "\r\n"
      .. "X-GitHub-Delivery: "
   tail = "\r\n\r\n" .. body
   prefix = os.getenv("BENCH_RUN") .. "-" .. thread_number .. "-"
end

function request()
   sent = sent + 1
   return head .. prefix .. sent .. tail
end

function response(status, headers, body)
   statuses[status] = (statuses[status] or 0) + 1
end

function done(summary, latency, requests)
   local counts = {}
   for _, thread in ipairs(threads) do
      for status, n in pairs(thread:get("statuses")) do
         counts[status] = (counts[status] or 0) + n
      end
   end
   local parts = {}
   for status, n in pairs(counts) do
      table.insert(parts, string.format('"%d":%d', status, n))
   end
   local e = summary.errors
   io.write(string.format(
      'BENCH-RESULT {"requests":%d,"duration_us":%d,"connect":%d,"read":%d,"write":%d,'
         .. '"timeout":%d,"p50_us":%d,"p99_us":%d,"max_us":%d,"statuses":{%s}}\n',
      summary.requests, summary.duration, e.connect, e.read, e.write, e.timeout,
      latency:percentile(50), latency:percentile(99), latency.max, table.concat(parts, ",")))
end
