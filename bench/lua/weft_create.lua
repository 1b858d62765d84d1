-- wrk script: every request creates a weft service with a unique name and a 256-byte
-- payload in its tags: POST /edge/management/v1/services
--   {"name":"<unique>","tags":{"payload":"<256 chars>"}}   header zt-session: $WEFT_TOKEN
-- Usage: WEFT_TOKEN=... wrk -s weft_create.lua URL -- RUNID
local dir = debug.getinfo(1, "S").source:match("^@(.*/)") or "./"
local common = dofile(dir .. "common.lua")

local token = os.getenv("WEFT_TOKEN")
if token == nil or token == "" then
  io.stderr:write("weft_create.lua: WEFT_TOKEN is not set\n")
  os.exit(2)
end
local payload = common.payload()
local headers = { ["Content-Type"] = "application/json", ["zt-session"] = token }

common.install(function(name)
  local body = '{"name":"' .. name .. '","tags":{"payload":"' .. payload .. '"}}'
  return wrk.format("POST", "/edge/management/v1/services", headers, body)
end)
