-- wrk script: every request is an etcd v3 put of a unique key with a 256-byte value,
-- through etcd's JSON gateway (POST /v3/kv/put, key and value base64-encoded).
-- Usage: wrk -s etcd_put.lua URL -- RUNID
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local value64 = common.base64(common.payload())
local headers = { ["Content-Type"] = "application/json" }

common.install(function(name)
  local body = '{"key":"' .. common.base64("bench/" .. name) .. '","value":"' .. value64 .. '"}'
  return wrk.format("POST", "/v3/kv/put", headers, body)
end)
