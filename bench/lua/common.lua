-- Shared by weft_create.lua and etcd_put.lua (loaded with dofile from the same folder).
--
-- wrk runs setup() and done() in its main Lua state and init()/request()/response() in one
-- Lua state per thread. Every request gets a unique name: RUNID-THREADID-COUNTER, where
-- RUNID is the first argument after `--` on the wrk command line and THREADID is set by
-- setup(). response() counts every non-2xx answer per thread; done() adds them up and
-- prints one machine-readable line, BENCH_RESULT key=value ..., which cluster.sh parses.

local M = {}

-- 256 printable bytes, the same for every request (a fixed, non-repeating-looking pattern).
function M.payload()
  local alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
  local t = {}
  for i = 1, 256 do
    local k = ((i * 37) % #alphabet) + 1
    t[i] = alphabet:sub(k, k)
  end
  return table.concat(t)
end

local B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
local b64c = {}
for i = 1, 64 do b64c[i - 1] = B64:sub(i, i) end

function M.base64(s)
  local out, len = {}, #s
  for i = 1, len, 3 do
    local a, b, c = s:byte(i, i + 2)
    local n = a * 65536 + (b or 0) * 256 + (c or 0)
    out[#out + 1] = b64c[math.floor(n / 262144) % 64]
      .. b64c[math.floor(n / 4096) % 64]
      .. (b and b64c[math.floor(n / 64) % 64] or "=")
      .. (c and b64c[n % 64] or "=")
  end
  return table.concat(out)
end

-- Installs the wrk hooks. make_request(name) must return a wrk request string.
function M.install(make_request)
  -- main state ------------------------------------------------------------------------
  local threads, next_id = {}, 0
  function setup(thread)
    thread:set("tid", next_id)
    next_id = next_id + 1
    threads[#threads + 1] = thread
  end

  -- per-thread state ------------------------------------------------------------------
  local runid, n = "run", 0
  non2xx, codes, sample = 0, "", ""
  local per_code = {}
  function init(args)
    if args[1] ~= nil and args[1] ~= "" then runid = args[1] end
  end
  function request()
    n = n + 1
    return make_request(runid .. "-" .. tostring(tid) .. "-" .. tostring(n))
  end
  function response(status, headers, body)
    if status < 200 or status > 299 then
      non2xx = non2xx + 1
      per_code[status] = (per_code[status] or 0) + 1
      local parts = {}
      for k, v in pairs(per_code) do parts[#parts + 1] = k .. ":" .. v end
      codes = table.concat(parts, ",")
      if sample == "" and body ~= nil then
        sample = body:sub(1, 160):gsub("[%s]+", " "):gsub("[^%w%p ]", "?")
      end
    end
  end

  -- main state again ------------------------------------------------------------------
  function done(summary, latency, requests)
    local bad, code_map, first_sample = 0, {}, ""
    for _, t in ipairs(threads) do
      bad = bad + (t:get("non2xx") or 0)
      local c = t:get("codes") or ""
      for k, v in c:gmatch("(%d+):(%d+)") do
        code_map[k] = (code_map[k] or 0) + tonumber(v)
      end
      local s = t:get("sample") or ""
      if first_sample == "" then first_sample = s end
    end
    local parts = {}
    for k, v in pairs(code_map) do parts[#parts + 1] = k .. ":" .. v end
    local e = summary.errors
    io.write(string.format(
      "BENCH_RESULT requests=%d ok=%d non2xx=%d duration_us=%d p50_us=%d p99_us=%d max_us=%d "
        .. "connect=%d read=%d write=%d timeout=%d codes=%s sample=%s\n",
      summary.requests, summary.requests - bad, bad, summary.duration,
      latency:percentile(50), latency:percentile(99), latency.max,
      e.connect, e.read, e.write, e.timeout,
      (#parts > 0 and table.concat(parts, ",") or "-"),
      (first_sample ~= "" and first_sample:gsub(" ", "_") or "-")))
  end
end

return M
