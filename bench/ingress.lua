-- wrk script for bench/ingress.py: a signed GitHub push per request, each with a body and
-- a delivery id of its own, and a count of the answers by status code.
--
-- rollhook takes a signed body it has seen before for a replay (the same event, whatever
-- the delivery id says), so every request must carry a new body and that body's own
-- X-Hub-Signature-256. Each request is a new push: the body file's head commit sha
-- (BENCH_SHA, in "after", the commit list and head_commit) is replaced by one made of the
-- run, the wrk thread and a counter, and the body is signed here with OpenSSL's HMAC
-- (LuaJIT's FFI, libcrypto is wrk's own: about 5-10 us for 8.8 KB). The body keeps its
-- size; both servers get the same bodies and check the same HMAC.
--
-- Environment: BENCH_BODY_FILE (the template body), BENCH_SHA (the 40-hex sha in it to
-- replace), BENCH_SECRET (the HMAC key), BENCH_RUN (10 hex digits, unique per wrk run),
-- BENCH_PATH (the URL path).

local ffi = require("ffi")
ffi.cdef[[
typedef struct evp_md_st EVP_MD;
const EVP_MD *EVP_sha256(void);
unsigned char *HMAC(const EVP_MD *evp_md, const void *key, int key_len,
                    const unsigned char *d, size_t n, unsigned char *md, unsigned int *md_len);
]]
local C = ffi.C

local threads = {}

function setup(thread)
   table.insert(threads, thread)
   thread:set("thread_number", #threads)
end

local head, length, pieces, run, secret, sha256
local digest = ffi.new("unsigned char[32]")
local digest_len = ffi.new("unsigned int[1]")
local HEX = {}
for i = 0, 255 do HEX[i] = string.format("%02x", i) end
local sent = 0
statuses = {}

local function split(text, sep)
   local parts, start = {}, 1
   while true do
      local i, j = string.find(text, sep, start, true)
      if not i then break end
      table.insert(parts, string.sub(text, start, i - 1))
      start = j + 1
   end
   table.insert(parts, string.sub(text, start))
   return parts
end

local function sign(body)
   C.HMAC(sha256, secret, #secret, body, #body, digest, digest_len)
   local hex = {}
   for i = 0, 31 do hex[i + 1] = HEX[digest[i]] end
   return table.concat(hex)
end

function init(args)
   local file = assert(io.open(os.getenv("BENCH_BODY_FILE"), "rb"))
   local body = file:read("*a")
   file:close()
   pieces = split(body, os.getenv("BENCH_SHA"))
   assert(#pieces > 1, "BENCH_SHA is not in the body")
   length = #body
   secret = os.getenv("BENCH_SECRET")
   sha256 = C.EVP_sha256()
   run = os.getenv("BENCH_RUN")
   assert(#run == 10, "BENCH_RUN must be 10 hex digits")
   run = run .. string.format("%02x", thread_number)
   head = "POST " .. os.getenv("BENCH_PATH") .. " HTTP/1.1\r\n"
      .. "Host: " .. wrk.host .. ":" .. wrk.port .. "\r\n"
      .. "User-Agent: GitHub-Hookshot/bench\r\n"
      .. "Content-Type: application/json\r\n"
      .. "X-GitHub-Event: push\r\n"
      .. "Content-Length: " .. length .. "\r\n"
      .. "X-GitHub-Delivery: "
end

function request()
   sent = sent + 1
   local sha = run .. string.format("%028d", sent)  -- 40 hex digits, unique per request
   local body = table.concat(pieces, sha)
   return head .. sha .. "\r\nX-Hub-Signature-256: sha256=" .. sign(body) .. "\r\n\r\n" .. body
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
