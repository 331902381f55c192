-- Runs the dissector's pure-Lua self-test under a plain Lua 5.4 interpreter (the Lua
-- of Wireshark 4.4-4.6, which has no bit32), with the Wireshark API stubbed out:
--   ECR_LUA_SELFTEST=1 lua5.4 dissector/test/lua54.lua
-- Debian's tshark 4.0 runs Lua 5.2, so this is how CI proves the AES, MD5, JSON and
-- frame code also runs on 5.4.
local function stub()
  local mt = {}
  local t = setmetatable({}, mt)
  mt.__index = function() return stub() end
  mt.__call = function() return stub() end
  mt.__tostring = function() return "stub" end
  mt.__concat = function(a, b) return tostring(a) .. tostring(b) end
  for _, op in ipairs({ "__add", "__sub", "__mul", "__div", "__bor", "__band" }) do
    mt[op] = function() return 0 end
  end
  return t
end
setmetatable(_G, { __index = function(_, k)
  if k == "bit" or k == "bit32" or k == "GcryptCipher" then return nil end
  return stub()
end })
assert(_VERSION == "Lua 5.4", "run with lua5.4, not " .. _VERSION)
assert(rawget(_G, "bit32") == nil)
local dir = arg and arg[0] and arg[0]:match("^(.*)/test/[^/]*$") or "dissector"
dofile(dir .. "/ecr.lua")
dofile(dir .. "/test/selftest.lua")
