-- ecr.lua: Wireshark/tshark dissector for QFPay ECR traffic
-- (cash register <-> Smart POS payment terminal).
--
-- Decodes:
--   * TCP port 9002 (preference ecr.tcp_port): 0x2f6e frames or JSON / Base64
--     messages (docs/protocol.md#d6), with TCP desegmentation;
--   * HTTP bodies on port 9001 (preference ecr.http_port), see README.md;
--   * the project's serial capture format (D9): link type USER0 (147), first
--     byte of each packet = direction (0x00 ECR->POS, 0x01 POS->ECR);
--   * every request dialect of D4 and the responses of D5, with AES-CBC
--     decryption (pure Lua, or GcryptCipher where Wireshark has it) and MD5
--     digest verification (pure Lua).
--
-- Works with Lua 5.2 (Wireshark <= 4.2) and Lua 5.4 (4.4+, no bit32).
-- The dissector must never raise a Lua error on malformed input: decoding
-- runs under pcall and problems become expert info.

local ECR_LUA_VERSION = "1.1"

-- Loaded twice (installed in the plugins folder and given with -X lua_script:)?
-- Every Lua plugin shares one global table: the first copy wins and this one
-- steps aside quietly instead of failing on the duplicate protocol.
if rawget(_G, "ECR_LUA_LOADED") then return end
local proto_ok, ecr = pcall(Proto, "ecr", "QFPay ECR Protocol")
if not proto_ok then return end -- an older copy without the marker got there first
rawset(_G, "ECR_LUA_LOADED", ECR_LUA_VERSION)

local sbyte, schar, sfind, ssub, sformat, srep = string.byte, string.char, string.find, string.sub, string.format, string.rep
local tconcat, tinsert, tsort = table.concat, table.insert, table.sort
local floor = math.floor

------------------------------------------------------------------------
-- 32-bit operations that work on Lua 5.2 and 5.4.
-- Prefer the `bit` library (LuaBitOp, shipped by Wireshark), then bit32,
-- then native operators, compiled with load() so that Lua 5.2 never has
-- to parse 5.3+ syntax.
------------------------------------------------------------------------
local band, bor, bxor, bnot, lshift, rshift, rol, norm
do
  local b = rawget(_G, "bit")
  local b32 = rawget(_G, "bit32")
  if type(b) == "table" and b.bxor and b.tobit and b.rol then
    band, bor, bxor, bnot = b.band, b.bor, b.bxor, b.bnot
    lshift, rshift, rol, norm = b.lshift, b.rshift, b.rol, b.tobit
  elseif type(b32) == "table" and b32.bxor then
    band, bor, bxor, bnot = b32.band, b32.bor, b32.bxor, b32.bnot
    lshift, rshift, rol = b32.lshift, b32.rshift, b32.lrotate
    norm = function(x) return b32.band(x, 0xffffffff) end
  else
    local chunk = load([[
      local M = 0xffffffff
      return {
        function(a, b) return (a & b) & M end,
        function(a, b) return (a | b) & M end,
        function(a, b) return (a ~ b) & M end,
        function(a) return (~a) & M end,
        function(a, n) return (a << n) & M end,
        function(a, n) return (a & M) >> n end,
        function(a, n) a = a & M; return ((a << n) | (a >> (32 - n))) & M end,
        function(a) return a & M end,
      }]])
    local t = chunk()
    band, bor, bxor, bnot, lshift, rshift, rol, norm =
      t[1], t[2], t[3], t[4], t[5], t[6], t[7], t[8]
  end
end

------------------------------------------------------------------------
-- MD5 (pure Lua)
------------------------------------------------------------------------
local MD5_K = {
  0xd76aa478, 0xe8c7b756, 0x242070db, 0xc1bdceee, 0xf57c0faf, 0x4787c62a, 0xa8304613, 0xfd469501,
  0x698098d8, 0x8b44f7af, 0xffff5bb1, 0x895cd7be, 0x6b901122, 0xfd987193, 0xa679438e, 0x49b40821,
  0xf61e2562, 0xc040b340, 0x265e5a51, 0xe9b6c7aa, 0xd62f105d, 0x02441453, 0xd8a1e681, 0xe7d3fbc8,
  0x21e1cde6, 0xc33707d6, 0xf4d50d87, 0x455a14ed, 0xa9e3e905, 0xfcefa3f8, 0x676f02d9, 0x8d2a4c8a,
  0xfffa3942, 0x8771f681, 0x6d9d6122, 0xfde5380c, 0xa4beea44, 0x4bdecfa9, 0xf6bb4b60, 0xbebfbc70,
  0x289b7ec6, 0xeaa127fa, 0xd4ef3085, 0x04881d05, 0xd9d4d039, 0xe6db99e5, 0x1fa27cf8, 0xc4ac5665,
  0xf4292244, 0x432aff97, 0xab9423a7, 0xfc93a039, 0x655b59c3, 0x8f0ccc92, 0xffeff47d, 0x85845dd1,
  0x6fa87e4f, 0xfe2ce6e0, 0xa3014314, 0x4e0811a1, 0xf7537e82, 0xbd3af235, 0x2ad7d2bb, 0xeb86d391,
}
for i = 1, 64 do MD5_K[i] = norm(MD5_K[i]) end
local MD5_S = {
  7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22, 7, 12, 17, 22,
  5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20, 5, 9, 14, 20,
  4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23, 4, 11, 16, 23,
  6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21, 6, 10, 15, 21,
}

local function md5_hex(msg)
  local len = #msg
  local bits = len * 8
  local tail = {}
  for i = 1, 8 do tail[i] = bits % 256; bits = floor(bits / 256) end
  msg = msg .. "\128" .. srep("\0", (55 - len) % 64) .. schar(tail[1], tail[2], tail[3], tail[4], tail[5], tail[6], tail[7], tail[8])
  local a0, b0, c0, d0 = norm(0x67452301), norm(0xefcdab89), norm(0x98badcfe), norm(0x10325476)
  local M = {}
  for chunk = 1, #msg, 64 do
    for i = 0, 15 do
      local p = chunk + i * 4
      local x1, x2, x3, x4 = sbyte(msg, p, p + 3)
      M[i] = norm(x1 + x2 * 256 + x3 * 65536 + x4 * 16777216)
    end
    local A, B, C, D = a0, b0, c0, d0
    for i = 0, 63 do
      local F, g
      if i < 16 then
        F = bor(band(B, C), band(bnot(B), D)); g = i
      elseif i < 32 then
        F = bor(band(D, B), band(bnot(D), C)); g = (5 * i + 1) % 16
      elseif i < 48 then
        F = bxor(B, bxor(C, D)); g = (3 * i + 5) % 16
      else
        F = bxor(C, bor(B, bnot(D))); g = (7 * i) % 16
      end
      F = norm(F + A + MD5_K[i + 1] + M[g])
      A = D; D = C; C = B
      B = norm(B + rol(F, MD5_S[i + 1]))
    end
    a0 = norm(a0 + A); b0 = norm(b0 + B); c0 = norm(c0 + C); d0 = norm(d0 + D)
  end
  local out = {}
  for _, w in ipairs({ a0, b0, c0, d0 }) do
    for s = 0, 24, 8 do out[#out + 1] = sformat("%02x", band(rshift(w, s), 0xff)) end
  end
  return tconcat(out)
end

------------------------------------------------------------------------
-- AES decryption (pure Lua, table driven "T-box" inverse cipher)
------------------------------------------------------------------------
local SBOX, INV_SBOX, TD0, TD1, TD2, TD3 = {}, {}, {}, {}, {}, {}
do
  local exp, log = {}, {}
  local x = 1
  for i = 0, 254 do
    exp[i] = x; log[x] = i
    local x2 = x * 2
    if x2 >= 256 then x2 = bxor(x2, 0x11b) end
    x = bxor(x, x2) -- multiply by the generator 3
  end
  local function mul(a, b)
    if a == 0 or b == 0 then return 0 end
    return exp[(log[a] + log[b]) % 255]
  end
  local function rotl8(b, n) return band(bor(lshift(b, n), rshift(b, 8 - n)), 0xff) end
  for i = 0, 255 do
    local inv = (i == 0) and 0 or exp[(255 - log[i]) % 255]
    local s = bxor(bxor(bxor(inv, rotl8(inv, 1)), bxor(rotl8(inv, 2), rotl8(inv, 3))), bxor(rotl8(inv, 4), 0x63))
    SBOX[i] = s
    INV_SBOX[s] = i
  end
  for i = 0, 255 do
    local si = INV_SBOX[i]
    local w = norm(mul(si, 14) * 16777216 + mul(si, 9) * 65536 + mul(si, 13) * 256 + mul(si, 11))
    TD0[i] = w
    TD1[i] = rol(w, 24)
    TD2[i] = rol(w, 16)
    TD3[i] = rol(w, 8)
  end
end

local function sub_word(w)
  return norm(SBOX[band(rshift(w, 24), 0xff)] * 16777216 + SBOX[band(rshift(w, 16), 0xff)] * 65536
    + SBOX[band(rshift(w, 8), 0xff)] * 256 + SBOX[band(w, 0xff)])
end

local function be_word(s, p)
  local a, b, c, d = sbyte(s, p, p + 3)
  return norm(a * 16777216 + b * 65536 + c * 256 + d)
end

-- Decryption key schedule, cached per key (the key is bytes, 16/24/32 long).
local key_schedules = {}
local function aes_dec_schedule(key)
  local ks = key_schedules[key]
  if ks then return ks end
  local nk = #key / 4
  local nr = nk + 6
  local w = {}
  for i = 0, nk - 1 do w[i] = be_word(key, i * 4 + 1) end
  local rcon = 1
  for i = nk, 4 * (nr + 1) - 1 do
    local t = w[i - 1]
    if i % nk == 0 then
      t = bxor(sub_word(rol(t, 8)), norm(rcon * 16777216))
      rcon = rcon * 2
      if rcon >= 256 then rcon = bxor(rcon, 0x11b) end
    elseif nk > 6 and i % nk == 4 then
      t = sub_word(t)
    end
    w[i] = bxor(w[i - nk], t)
  end
  local dk = {}
  for r = 0, nr do
    for j = 0, 3 do
      local v = w[4 * (nr - r) + j]
      if r > 0 and r < nr then
        v = bxor(bxor(TD0[SBOX[band(rshift(v, 24), 0xff)]], TD1[SBOX[band(rshift(v, 16), 0xff)]]),
                 bxor(TD2[SBOX[band(rshift(v, 8), 0xff)]], TD3[SBOX[band(v, 0xff)]]))
      end
      dk[4 * r + j] = v
    end
  end
  ks = { rk = dk, nr = nr }
  key_schedules[key] = ks
  return ks
end

local function word_bytes(w)
  return band(rshift(w, 24), 0xff), band(rshift(w, 16), 0xff), band(rshift(w, 8), 0xff), band(w, 0xff)
end

-- AES-CBC decrypt without padding removal. Returns plaintext bytes.
local function aes_cbc_decrypt_lua(key, iv, data)
  local ks = aes_dec_schedule(key)
  local rk, nr = ks.rk, ks.nr
  local p0, p1, p2, p3 = be_word(iv, 1), be_word(iv, 5), be_word(iv, 9), be_word(iv, 13)
  local out = {}
  for pos = 1, #data - 15, 16 do
    local c0, c1, c2, c3 = be_word(data, pos), be_word(data, pos + 4), be_word(data, pos + 8), be_word(data, pos + 12)
    local s0, s1, s2, s3 = bxor(c0, rk[0]), bxor(c1, rk[1]), bxor(c2, rk[2]), bxor(c3, rk[3])
    local k = 4
    for _ = 1, nr - 1 do
      local t0 = bxor(bxor(TD0[rshift(s0, 24)], TD1[band(rshift(s3, 16), 0xff)]), bxor(bxor(TD2[band(rshift(s2, 8), 0xff)], TD3[band(s1, 0xff)]), rk[k]))
      local t1 = bxor(bxor(TD0[rshift(s1, 24)], TD1[band(rshift(s0, 16), 0xff)]), bxor(bxor(TD2[band(rshift(s3, 8), 0xff)], TD3[band(s2, 0xff)]), rk[k + 1]))
      local t2 = bxor(bxor(TD0[rshift(s2, 24)], TD1[band(rshift(s1, 16), 0xff)]), bxor(bxor(TD2[band(rshift(s0, 8), 0xff)], TD3[band(s3, 0xff)]), rk[k + 2]))
      local t3 = bxor(bxor(TD0[rshift(s3, 24)], TD1[band(rshift(s2, 16), 0xff)]), bxor(bxor(TD2[band(rshift(s1, 8), 0xff)], TD3[band(s0, 0xff)]), rk[k + 3]))
      s0, s1, s2, s3 = t0, t1, t2, t3
      k = k + 4
    end
    local a0, a1, a2, a3 = word_bytes(rk[k]); local b0, b1, b2, b3 = word_bytes(rk[k + 1])
    local e0, e1, e2, e3 = word_bytes(rk[k + 2]); local f0, f1, f2, f3 = word_bytes(rk[k + 3])
    local q0, q1, q2, q3 = word_bytes(p0); local r0, r1, r2, r3 = word_bytes(p1)
    local u0, u1, u2, u3 = word_bytes(p2); local v0, v1, v2, v3 = word_bytes(p3)
    local S = INV_SBOX
    out[#out + 1] = schar(
      bxor(bxor(S[rshift(s0, 24)], a0), q0), bxor(bxor(S[band(rshift(s3, 16), 0xff)], a1), q1),
      bxor(bxor(S[band(rshift(s2, 8), 0xff)], a2), q2), bxor(bxor(S[band(s1, 0xff)], a3), q3),
      bxor(bxor(S[rshift(s1, 24)], b0), r0), bxor(bxor(S[band(rshift(s0, 16), 0xff)], b1), r1),
      bxor(bxor(S[band(rshift(s3, 8), 0xff)], b2), r2), bxor(bxor(S[band(s2, 0xff)], b3), r3),
      bxor(bxor(S[rshift(s2, 24)], e0), u0), bxor(bxor(S[band(rshift(s1, 16), 0xff)], e1), u1),
      bxor(bxor(S[band(rshift(s0, 8), 0xff)], e2), u2), bxor(bxor(S[band(s3, 0xff)], e3), u3),
      bxor(bxor(S[rshift(s3, 24)], f0), v0), bxor(bxor(S[band(rshift(s2, 16), 0xff)], f1), v1),
      bxor(bxor(S[band(rshift(s1, 8), 0xff)], f2), v2), bxor(bxor(S[band(s0, 0xff)], f3), v3))
    p0, p1, p2, p3 = c0, c1, c2, c3
  end
  return tconcat(out)
end

-- GcryptCipher (Wireshark 4.6+) when present; otherwise pure Lua.
local gcrypt_ok = type(rawget(_G, "GcryptCipher")) ~= "nil"
local crypto_backend = gcrypt_ok and "gcrypt" or "lua"

local function aes_cbc_decrypt_gcrypt(key, iv, data)
  local algos = { [16] = rawget(_G, "GCRY_CIPHER_AES128") or rawget(_G, "GCRY_CIPHER_AES") or 7,
                  [24] = rawget(_G, "GCRY_CIPHER_AES192") or 8,
                  [32] = rawget(_G, "GCRY_CIPHER_AES256") or 9 }
  local c = GcryptCipher.open(algos[#key], rawget(_G, "GCRY_CIPHER_MODE_CBC") or 3, 0)
  c:setkey(ByteArray.new(key, true))
  c:setiv(ByteArray.new(iv, true))
  local out = c:decrypt(nil, ByteArray.new(data, true))
  return out:raw()
end

local function aes_cbc_decrypt(key, iv, data)
  if gcrypt_ok then
    local ok, res = pcall(aes_cbc_decrypt_gcrypt, key, iv, data)
    if ok and type(res) == "string" and #res == #data then return res end
    gcrypt_ok = false -- binding unusable: fall back for good
    crypto_backend = "lua"
  end
  return aes_cbc_decrypt_lua(key, iv, data)
end

-- PKCS#7 unpadding; returns plaintext or nil.
local function pkcs7_strip(p)
  local n = #p
  if n == 0 or n % 16 ~= 0 then return nil end
  local pad = sbyte(p, n)
  if pad < 1 or pad > 16 then return nil end
  for i = n - pad + 1, n do
    if sbyte(p, i) ~= pad then return nil end
  end
  return ssub(p, 1, n - pad)
end

------------------------------------------------------------------------
-- Base64 (strict alphabet; line breaks tolerated, as Android's DEFAULT
-- flag inserts them)
------------------------------------------------------------------------
local B64 = {}
do
  local alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
  for i = 1, 64 do B64[sbyte(alphabet, i)] = i - 1 end
end

local function b64_decode(s)
  s = s:gsub("[\r\n]", "")
  local n = #s
  if n == 0 or n % 4 ~= 0 then return nil end
  local pad = 0
  if ssub(s, n) == "=" then pad = 1 end
  if ssub(s, n - 1) == "==" then pad = 2 end
  local out = {}
  for i = 1, n, 4 do
    local c1, c2, c3, c4 = sbyte(s, i, i + 3)
    local last = (i + 3 == n)
    local v1, v2 = B64[c1], B64[c2]
    local v3 = B64[c3]
    local v4 = B64[c4]
    if not v1 or not v2 then return nil end
    if last and pad > 0 then
      if pad == 2 then
        if c3 ~= 61 or c4 ~= 61 then return nil end
        out[#out + 1] = schar(floor((v1 * 262144 + v2 * 4096) / 65536) % 256)
      else
        if not v3 or c4 ~= 61 then return nil end
        local x = v1 * 262144 + v2 * 4096 + v3 * 64
        out[#out + 1] = schar(floor(x / 65536) % 256, floor(x / 256) % 256)
      end
    else
      if not v3 or not v4 then return nil end
      local x = v1 * 262144 + v2 * 4096 + v3 * 64 + v4
      out[#out + 1] = schar(floor(x / 65536) % 256, floor(x / 256) % 256, x % 256)
    end
  end
  return tconcat(out)
end

local function looks_base64(s)
  if #s < 16 then return false end
  local t = s:gsub("[\r\n]", "")
  return #t % 4 == 0 and t:match("^[A-Za-z0-9+/]+=?=?$") ~= nil
end

------------------------------------------------------------------------
-- POS-KEY handling (D3) and decryption
------------------------------------------------------------------------
local IV = "qfpay202306_hjsh"

local function hex_decode(h)
  return (h:gsub("..", function(x) return schar(tonumber(x, 16)) end))
end

-- Candidate AES keys for a POS-KEY text, in the order D3 prescribes.
local key_candidates_cache = {}
local function key_candidates(pos_key)
  local c = key_candidates_cache[pos_key]
  if c then return c end
  c = {}
  local n = #pos_key
  if n == 16 or n == 24 or n == 32 then
    c[#c + 1] = { key = pos_key, interp = sformat("text (AES-%d)", n * 8) }
  end
  if n == 32 and pos_key:match("^%x+$") then
    c[#c + 1] = { key = hex_decode(pos_key), interp = "hex (AES-128)" }
  end
  key_candidates_cache[pos_key] = c
  return c
end

local json_parse -- forward (defined with the parser below)

-- A key list from a POS-KEY text or a list of them.
local function key_list(keys)
  if type(keys) == "string" then return (keys ~= "") and { keys } or {} end
  return keys or {}
end

-- Decrypt Base64 text with the POS-KEYs (each key's D3 readings in turn).
-- A decryption counts only when it yields a JSON object, as the analyzer
-- requires: about one wrong key in 256 still ends in valid PKCS#7 padding.
-- Returns plaintext, interp, key index or nil, reason.
local decrypt_cache, decrypt_cache_n = {}, 0
local function decrypt_b64(b64, keys)
  keys = key_list(keys)
  if #keys == 0 then return nil, "no POS-KEY configured" end
  local ck = tconcat(keys, "\0") .. "\1" .. b64
  local hit = decrypt_cache[ck]
  if hit then return hit[1], hit[2], hit[3] end
  local raw = b64_decode(b64)
  local res, why
  if not raw then
    why = "not valid Base64"
  elseif #raw == 0 or #raw % 16 ~= 0 then
    why = sformat("ciphertext length %d is not a multiple of 16", #raw)
  else
    local tried, padded = 0, false
    for ki, pos_key in ipairs(keys) do
      for _, cand in ipairs(key_candidates(pos_key)) do
        tried = tried + 1
        local ok, p = pcall(aes_cbc_decrypt, cand.key, IV, raw)
        local plain = ok and p and pkcs7_strip(p)
        if plain then
          padded = true
          local obj = json_parse(plain)
          if obj and obj.t == "obj" then res = { plain, cand.interp, ki }; break end
        end
      end
      if res then break end
    end
    if tried == 0 then
      why = sformat("POS-KEY has %d characters (need 16, 24 or 32)", #keys[1])
    elseif padded then
      why = "padding valid but the text is not a JSON object (wrong POS-KEY?)"
    else
      why = "bad padding (wrong POS-KEY?)"
    end
  end
  if not res then res = { nil, why } end
  if decrypt_cache_n > 2000 then decrypt_cache, decrypt_cache_n = {}, 0 end
  decrypt_cache[ck] = res
  decrypt_cache_n = decrypt_cache_n + 1
  return res[1], res[2], res[3]
end

------------------------------------------------------------------------
-- Lenient JSON parser (JSON plus Android org.json leniency: unquoted
-- names, '=' or ':' separators, single or double quotes, unquoted values).
-- Nodes keep raw number tokens and 1-based source positions s..e.
------------------------------------------------------------------------
local JSON_EOF = "unexpected end of input"

local function utf8_char(cp)
  if cp < 0x80 then return schar(cp) end
  if cp < 0x800 then return schar(0xC0 + floor(cp / 64), 0x80 + cp % 64) end
  if cp < 0x10000 then return schar(0xE0 + floor(cp / 4096), 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64) end
  return schar(0xF0 + floor(cp / 262144), 0x80 + floor(cp / 4096) % 64, 0x80 + floor(cp / 64) % 64, 0x80 + cp % 64)
end

local function skip_ws(s, p)
  local _, e = sfind(s, "^[ \t\r\n]*", p)
  return e + 1
end

local ESC = { ['"'] = '"', ["'"] = "'", ["\\"] = "\\", ["/"] = "/", b = "\b", f = "\f", n = "\n", r = "\r", t = "\t" }

local function parse_string(s, p)
  local q = ssub(s, p, p)
  local buf = {}
  local i = p + 1
  local n = #s
  while true do
    if i > n then return nil, JSON_EOF end
    local j = sfind(s, "[\\" .. q .. "]", i)
    if not j then return nil, JSON_EOF end
    buf[#buf + 1] = ssub(s, i, j - 1)
    local c = ssub(s, j, j)
    if c == q then
      return { t = "str", v = tconcat(buf), s = p, e = j, quote = q }, j + 1
    end
    local e = ssub(s, j + 1, j + 1)
    if e == "" then return nil, JSON_EOF end
    if e == "u" then
      local hex = ssub(s, j + 2, j + 5)
      if #hex < 4 then return nil, JSON_EOF end
      local cp = tonumber(hex, 16)
      if not cp then return nil, "bad \\u escape" end
      local adv = 6
      if cp >= 0xD800 and cp <= 0xDBFF and ssub(s, j + 6, j + 7) == "\\u" then
        local lo = tonumber(ssub(s, j + 8, j + 11), 16)
        if lo and lo >= 0xDC00 and lo <= 0xDFFF then
          cp = 0x10000 + (cp - 0xD800) * 1024 + (lo - 0xDC00)
          adv = 12
        end
      end
      buf[#buf + 1] = utf8_char(cp)
      i = j + adv
    else
      buf[#buf + 1] = ESC[e] or e
      i = j + 2
    end
  end
end

local parse_value

local function parse_object(s, p, depth)
  local node = { t = "obj", keys = {}, vals = {}, knodes = {}, s = p }
  local i = skip_ws(s, p + 1)
  local n = #s
  if i > n then return nil, JSON_EOF end
  if ssub(s, i, i) == "}" then node.e = i; return node, i + 1 end
  while true do
    i = skip_ws(s, i)
    if i > n then return nil, JSON_EOF end
    local c = ssub(s, i, i)
    local kname, knode
    if c == '"' or c == "'" then
      local kn, ni = parse_string(s, i)
      if not kn then return nil, ni end
      kname, knode, i = kn.v, kn, ni
    else
      local _, e = sfind(s, "^[^%s:=,{}%[%]\"']+", i)
      if not e then return nil, "bad object key at " .. i end
      kname = ssub(s, i, e)
      knode = { t = "name", v = kname, s = i, e = e }
      i = e + 1
    end
    i = skip_ws(s, i)
    if i > n then return nil, JSON_EOF end
    c = ssub(s, i, i)
    if c == ":" then i = i + 1
    elseif c == "=" then
      i = i + 1
      if ssub(s, i, i) == ">" then i = i + 1 end
    else
      return nil, "expected ':' or '=' at " .. i
    end
    local v, ni = parse_value(s, i, depth + 1)
    if not v then return nil, ni end
    if node.vals[kname] == nil then node.keys[#node.keys + 1] = kname end
    node.vals[kname] = v
    node.knodes[kname] = knode
    i = skip_ws(s, ni)
    if i > n then return nil, JSON_EOF end
    c = ssub(s, i, i)
    if c == "," or c == ";" then
      i = i + 1
    elseif c == "}" then
      node.e = i
      return node, i + 1
    else
      return nil, "expected ',' or '}' at " .. i
    end
  end
end

local function parse_array(s, p, depth)
  local node = { t = "arr", items = {}, s = p }
  local i = skip_ws(s, p + 1)
  local n = #s
  if i > n then return nil, JSON_EOF end
  if ssub(s, i, i) == "]" then node.e = i; return node, i + 1 end
  while true do
    local v, ni = parse_value(s, i, depth + 1)
    if not v then return nil, ni end
    node.items[#node.items + 1] = v
    i = skip_ws(s, ni)
    if i > n then return nil, JSON_EOF end
    local c = ssub(s, i, i)
    if c == "," or c == ";" then i = i + 1
    elseif c == "]" then node.e = i; return node, i + 1
    else return nil, "expected ',' or ']' at " .. i end
  end
end

parse_value = function(s, p, depth)
  if depth > 40 then return nil, "nesting too deep" end
  local i = skip_ws(s, p)
  if i > #s then return nil, JSON_EOF end
  local c = ssub(s, i, i)
  if c == "{" then return parse_object(s, i, depth) end
  if c == "[" then return parse_array(s, i, depth) end
  if c == '"' or c == "'" then return parse_string(s, i) end
  local _, e = sfind(s, "^[^,:%]}/\\\"%[{;=#%s]+", i)
  if not e then return nil, "unexpected character at " .. i end
  local raw = ssub(s, i, e)
  local node
  if raw == "true" or raw == "false" then node = { t = "bool", raw = raw, v = (raw == "true") }
  elseif raw == "null" then node = { t = "null", raw = raw }
  elseif raw:match("^%-?%d+%.?%d*[eE]?[-+]?%d*$") and tonumber(raw) then node = { t = "num", raw = raw, v = tonumber(raw) }
  else node = { t = "str", v = raw, unquoted = true } end
  node.s, node.e = i, e
  return node, e + 1
end

-- Parse a whole text; returns node or nil, err ("unexpected end of input" = truncated).
json_parse = function(s)
  local ok, v, ni = pcall(parse_value, s, 1, 0)
  if not ok then return nil, "parser error: " .. tostring(v) end
  if not v then return nil, ni end
  if skip_ws(s, ni) <= #s then return nil, "trailing data at " .. ni end
  return v
end

-- Find where a JSON value starting at p ends (for stream framing).
-- Returns end position, or nil + err (err == JSON_EOF when more data needed).
local function json_value_end(s, p)
  local ok, v, ni = pcall(parse_value, s, p, 0)
  if not ok then return nil, "parser error" end
  if not v then return nil, ni end
  return ni - 1
end

------------------------------------------------------------------------
-- Digest (spec section 4, D4)
------------------------------------------------------------------------
local function bytewise_less(a, b)
  -- Lua's '<' on strings uses strcoll (locale dependent); compare bytes.
  local la, lb = #a, #b
  for i = 1, (la < lb) and la or lb do
    local x, y = sbyte(a, i), sbyte(b, i)
    if x ~= y then return x < y end
  end
  return la < lb
end

-- opts: quote ("'" or '"'), sorted (bool), sep (member separator), numfmt
-- (function(raw, value, key) -> text or nil)
local format_content
local to_json -- forward: nested values are signed as compact JSON, as the analyzer does
local function format_value(v, opts)
  if v.t == "str" then
    return opts.quote .. v.v .. opts.quote
  elseif v.t == "num" then
    return opts.numfmt and opts.numfmt(v.raw, v.v, opts.key) or v.raw
  elseif v.t == "null" then
    return opts.quote .. opts.quote
  elseif v.t == "bool" then
    return v.raw
  elseif v.t == "obj" or v.t == "arr" then
    return to_json(v)
  end
  return "''"
end

format_content = function(obj, opts)
  opts = opts or { quote = "'", sorted = true }
  local keys = {}
  for i, k in ipairs(obj.keys) do keys[i] = k end
  if opts.sorted ~= false then tsort(keys, bytewise_less) end
  local parts = {}
  for _, k in ipairs(keys) do
    opts.key = k
    parts[#parts + 1] = k .. "=" .. format_value(obj.vals[k], opts)
  end
  return "{" .. tconcat(parts, opts.sep or ",") .. "}"
end

-- A number as Rust's `{}` (shortest round-trip, no exponent) prints it.
local function shortest_number(raw, v)
  if not v or v ~= v or v == math.huge or v == -math.huge then return raw end
  if v == floor(v) and math.abs(v) < 1e15 then return sformat("%d", v) end
  for d = 1, 17 do
    local t = sformat("%." .. d .. "f", v)
    if tonumber(t) == v then return t end
  end
  return raw
end

-- Fields holding an amount, whose formatting senders get wrong most often.
local AMOUNT_FIELDS = { amt = true, refund_amount = true, txamt = true }

-- Number spellings of the signing mistakes the analyzer names (crates/ecr-proto
-- digest.rs): (name, description, reformat(raw, value, is_amount)).
local NUMBER_FORMS = {
  { "number-shortest-form", "numbers were signed in their shortest form, not as sent (e.g. 10.1 for 10.10)",
    function(raw, v) return shortest_number(raw, v) end },
  { "amount-two-decimals", "the amount was signed with two decimals, not as sent (e.g. 10.10 for 10.1)",
    function(raw, v, amount) if amount and v then return sformat("%.2f", v) end return raw end },
  { "amount-in-cents", "the amount was signed in integer cents (e.g. 1010 for 10.1)",
    function(raw, v, amount)
      if amount and v then
        local c = floor(v * 100 + 0.5)
        if math.abs(c) < 1e15 then return sformat("%d", c) end
      end
      return raw
    end },
  { "amount-float-notation", "the amount was signed as a float (e.g. 100.0 for 100)",
    function(raw, v, amount)
      if amount and v then
        local t = shortest_number(raw, v)
        if not t:find("[.eE]") then t = t .. ".0" end
        return t
      end
      return raw
    end },
}

-- Compact JSON of a parsed value, in wire order (what a sender that signed the
-- JSON text instead of format_content hashed).
local function json_escape(str)
  return (str:gsub('[%c"\\]', function(c)
    local m = ({ ['"'] = '\\"', ["\\"] = "\\\\", ["\n"] = "\\n", ["\r"] = "\\r", ["\t"] = "\\t", ["\b"] = "\\b", ["\f"] = "\\f" })[c]
    return m or sformat("\\u%04x", sbyte(c))
  end))
end
to_json = function(v)
  if v.t == "str" then return '"' .. json_escape(v.v) .. '"' end
  if v.t == "num" or v.t == "bool" then return v.raw end
  if v.t == "null" then return "null" end
  if v.t == "arr" then
    local parts = {}
    for _, it in ipairs(v.items) do parts[#parts + 1] = to_json(it) end
    return "[" .. tconcat(parts, ",") .. "]"
  end
  if v.t == "obj" then
    local parts = {}
    for _, k in ipairs(v.keys) do parts[#parts + 1] = '"' .. json_escape(k) .. '":' .. to_json(v.vals[k]) end
    return "{" .. tconcat(parts, ",") .. "}"
  end
  return "null"
end

-- Candidate texts for the signing mistakes, in the analyzer's order:
-- { name, description, text, placement ("append" | "prepend" | "omit") }.
-- basis: "plaintext" (format_content) or "ciphertext" (the Base64 text b64).
local function signing_variants(obj, basis, canonical, b64)
  local out = {}
  local function push(name, desc, text, placement)
    if placement ~= "append" or text ~= canonical then out[#out + 1] = { name, desc, text, placement } end
  end
  push("key-not-appended", "the POS-KEY was not appended before hashing", canonical, "omit")
  push("key-prepended", "the POS-KEY was put before the text instead of after it", canonical, "prepend")
  if basis == "ciphertext" then
    if obj then
      push("digest-over-plaintext", "the digest is over the plaintext format_content, not the Base64 ciphertext", format_content(obj), "append")
    end
    return out
  end
  for _, nf in ipairs(NUMBER_FORMS) do
    local f = nf[3]
    local numfmt = function(raw, v, key) return f(raw, v, AMOUNT_FIELDS[key] == true) end
    push(nf[1], nf[2], format_content(obj, { quote = "'", sorted = true, numfmt = numfmt }), "append")
  end
  push("double-quotes", "strings were signed in double quotes instead of single quotes",
    format_content(obj, { quote = '"', sorted = true }), "append")
  push("unsorted-keys", "keys were signed in wire order instead of sorted order",
    format_content(obj, { quote = "'", sorted = false }), "append")
  push("space-after-comma", 'members were joined with ", " instead of ","',
    format_content(obj, { quote = "'", sorted = true, sep = ", " }), "append")
  push("signed-json", "the JSON text of the content was signed instead of format_content", to_json(obj), "append")
  if b64 then
    push("digest-over-ciphertext", "the digest is over the Base64 ciphertext, not the plaintext format_content", b64, "append")
  end
  return out
end

local function find_mistake(given, variants, key)
  for _, v in ipairs(variants) do
    local d
    if v[4] == "append" then d = md5_hex(v[3] .. key)
    elseif v[4] == "prepend" then d = md5_hex(key .. v[3])
    else d = md5_hex(v[3]) end
    if d == given then return v end
  end
  return nil
end

-- Verify a digest (as the analyzer's digest::verify does).
-- obj: the content object (nil for a content-encrypted request whose plaintext
-- did not parse); basis "plaintext" or "ciphertext"; b64: the Base64 text (the
-- signed text for "ciphertext", a mistake candidate for "plaintext");
-- signer: index of the key that decrypted the message, if any.
-- Returns status, computed, variant name, hint, format_content text.
local function verify_digest(obj, digest, keys, basis, b64, signer)
  keys = key_list(keys)
  local fc = obj and format_content(obj) or nil
  if digest == nil then return "absent", nil, nil, nil, fc end
  if #keys == 0 then return "unverified", nil, nil, nil, fc end
  local canonical = (basis == "ciphertext") and b64 or fc
  local d = digest:lower():match("^%s*(.-)%s*$")
  local order = {}
  if signer and keys[signer] then order[1] = signer else for i = 1, #keys do order[i] = i end end
  for _, i in ipairs(order) do
    local c = md5_hex(canonical .. keys[i])
    if c == d then return "ok", c, nil, nil, fc end
  end
  local computed = md5_hex(canonical .. keys[order[1]])
  local variants = signing_variants(obj, basis, canonical, (basis == "plaintext") and b64 or nil)
  for _, i in ipairs(order) do
    local m = find_mistake(d, variants, keys[i])
    if m then return "mismatch", computed, m[1], "digest matches if the sender made this mistake: " .. m[2], fc end
  end
  if signer then
    for i, k in ipairs(keys) do
      if i ~= signer and md5_hex(canonical .. k) == d then
        return "mismatch", computed, "other-key",
          sformat("digest matches if the sender made this mistake: signed with key #%d of the key file, not the key that decrypts it", i - 1), fc
      end
    end
  end
  return "mismatch", computed, nil, nil, fc
end

-- Compatibility wrapper (self-test): plain content object, one key text.
local function verify_object_digest(obj, digest, keys)
  return verify_digest(obj, digest, keys, "plaintext", nil, nil)
end

------------------------------------------------------------------------
-- Value tables
------------------------------------------------------------------------
local FRAME_TYPES = {
  [0x10] = "Request", [0x20] = "Response (ack)",
  [0x30] = "Error: unknown error", [0x31] = "Error: format error", [0x32] = "Error: validation error",
  [0x33] = "Error: decryption error", [0x34] = "Error: data segment format error",
  [0x35] = "Error: packet concatenation error",
}
local ERROR_NAMES = {
  [0x30] = "Unknown error", [0x31] = "Format error", [0x32] = "Validation error",
  [0x33] = "Decryption error", [0x34] = "Data segment format error", [0x35] = "Packet concatenation error",
}
local FUNC_TYPES = {
  [1001] = "Payment", [1002] = "Refund", [3001] = "Print receipt",
  [3002] = "Print transaction summary", [4001] = "Transaction inquiry", [5001] = "Cancel trade/refund request",
}
local FUNC_SHORT = {
  [1001] = "Payment", [1002] = "Refund", [3001] = "Print receipt", [3002] = "Print summary",
  [4001] = "Inquiry", [5001] = "Cancel request",
}
local RESPCD = {
  ["4003"] = "Request Denied", ["4004"] = "Incorrect Method (use POST)", ["4005"] = "Other Errors",
  ["4006"] = "Incorrect Parameters", ["4007"] = "User not logged in", ["5001"] = "Decryption Failed",
  ["6000"] = "Request Successful", ["6001"] = "Request Cancelled", ["6002"] = "Request Error",
}
local CHANNELS = {
  card_payment = { "Visa / Mastercard", "802808" },
  wx = { "WeChat Pay", "800208 (CPM) / 800201 (MPM)" },
  alipay = { "Alipay", "800108 (CPM) / 800101 (MPM)" },
  payme = { "PayMe", "805808 (CPM) / 805801 (MPM)" },
  union = { "UnionPay QuickPass", "800708 (CPM) / 800701 (MPM)" },
  fps = { "FPS", "802001 (MPM)" },
  octopus = { "Octopus", "803708" },
  unionpay_card = { "UnionPay Card", "806708" },
  amex_card = { "American Express Card", "806808" },
}
local PAYTYPES = {}
for ch, v in pairs(CHANNELS) do
  for code in v[2]:gmatch("%d%d%d%d%d%d") do PAYTYPES[code] = ch end
end
local DIRECTIONS = { [0] = "ECR -> POS", [1] = "POS -> ECR" }
local CURRENCIES = { ["344"] = "HKD", ["156"] = "CNY", ["840"] = "USD", ["446"] = "MOP", ["702"] = "SGD" }

-- Mandatory request fields per func_type (spec 3.x)
local MANDATORY = {
  [1001] = { "amt", "channel" },
  [1002] = { "orderId" },
  [3001] = { "orderId" },
  [4001] = { "orderId|out_trade_no" },
}

------------------------------------------------------------------------
-- Fields
------------------------------------------------------------------------
local F = {}
local function fld(name, ...) F[name] = ...; end

F.direction = ProtoField.uint8("ecr.direction", "Direction", base.DEC, DIRECTIONS)
F.start = ProtoField.uint16("ecr.start", "Start indicator", base.HEX)
F.version = ProtoField.uint8("ecr.version", "Version", base.HEX)
F.type = ProtoField.uint8("ecr.type", "Payload type", base.HEX, FRAME_TYPES)
F.ref = ProtoField.uint8("ecr.ref", "Reference number", base.DEC)
F.total_len = ProtoField.uint16("ecr.total_len", "Total length", base.DEC)
F.data_len = ProtoField.uint16("ecr.data_len", "Data length", base.DEC)
F.data = ProtoField.bytes("ecr.data", "Data segment")
F["end"] = ProtoField.uint16("ecr.end", "End indicator", base.HEX)
F.fragment = ProtoField.framenum("ecr.fragment", "Fragment in frame")
F.fragments = ProtoField.none("ecr.fragments", "Fragments")
F.fragment_count = ProtoField.uint16("ecr.fragment.count", "Fragment count", base.DEC)
F.is_fragment = ProtoField.bool("ecr.fragmented", "Frame is a fragment of a split message")
F.reassembled_in = ProtoField.framenum("ecr.reassembled_in", "Reassembled in frame")
F.reassembled_len = ProtoField.uint32("ecr.reassembled.length", "Reassembled length", base.DEC)
F.junk = ProtoField.bytes("ecr.junk", "Bytes outside any frame")
F.ack_in = ProtoField.framenum("ecr.ack_in", "Answered in frame")
F.ack_to = ProtoField.framenum("ecr.ack_to", "Answers the request in frame")
F.ack_time = ProtoField.double("ecr.ack_time", "Answer time (ms)")
local FT = rawget(_G, "frametype")
F.response_in = ProtoField.framenum("ecr.response_in", "Response in frame", base.NONE, FT and FT.RESPONSE or nil)
F.request_in = ProtoField.framenum("ecr.request_in", "Request in frame", base.NONE, FT and FT.REQUEST or nil)
F.latency = ProtoField.double("ecr.latency", "Response time (ms)")
F.framing = ProtoField.string("ecr.framing", "Framing")
F.usb_device = ProtoField.string("ecr.usb.device", "USB device (bus.address)")
F.line_settings = ProtoField.string("ecr.usb.line_coding", "Line settings (baud, data bits, parity, stop bits)")
F.usb_oriented = ProtoField.string("ecr.usb.oriented_by", "Cash register side chosen because")
F.kind = ProtoField.string("ecr.kind", "Message kind")
F.dialect = ProtoField.string("ecr.dialect", "Dialect")
F.envelope_form = ProtoField.string("ecr.envelope_form", "Envelope form")
F.key_interp = ProtoField.string("ecr.key_interp", "POS-KEY interpretation")
F.decrypted = ProtoField.string("ecr.decrypted", "Decrypted text")
F.content = ProtoField.string("ecr.content", "Content (as sent)")
F.func_type = ProtoField.uint32("ecr.func_type", "Function type", base.DEC, FUNC_TYPES)
F.channel = ProtoField.string("ecr.channel", "Channel")
F.paytype = ProtoField.string("ecr.paytype", "PayType")
F.amt = ProtoField.double("ecr.amt", "Amount")
F.out_trade_no = ProtoField.string("ecr.out_trade_no", "Merchant order ID (out_trade_no)")
F.order_id = ProtoField.string("ecr.order_id", "QFPay order ID (orderId)")
F.refund_amount = ProtoField.string("ecr.refund_amount", "Refund amount")
F.camera_id = ProtoField.int32("ecr.camera_id", "Camera", base.DEC, { [0] = "back", [1] = "front" })
F.payment_timeout = ProtoField.int32("ecr.payment_timeout", "Payment timeout (s)")
F.wait_card_timeout = ProtoField.int32("ecr.wait_card_timeout", "Wait card timeout (s)")
F.scan_type = ProtoField.string("ecr.scan_type", "Scan type")
F.move_to_back = ProtoField.int32("ecr.move_to_back", "Return to home (moveToBack)")
F.allow_modify_flag = ProtoField.int32("ecr.allow_modify_flag", "Allow modify flag")
F.param = ProtoField.string("ecr.param", "Other parameter")
F.digest = ProtoField.string("ecr.digest", "Digest")
F.digest_status = ProtoField.string("ecr.digest.status", "Digest status")
F.digest_computed = ProtoField.string("ecr.digest.computed", "Computed digest")
F.digest_variant = ProtoField.string("ecr.digest.variant", "Signing mistake (the digest matches this variant)")
F.format_content = ProtoField.string("ecr.format_content", "Digest input (format_content, without key)")
F.respcd = ProtoField.string("ecr.respcd", "Response code")
F.respcd_meaning = ProtoField.string("ecr.respcd.meaning", "Response code meaning")
F.respmsg = ProtoField.string("ecr.respmsg", "Response message")
F.resperr = ProtoField.string("ecr.resperr", "Response error")
F.resp_data = ProtoField.string("ecr.resp_data", "Business data (as sent)")
F.data_respcd = ProtoField.string("ecr.data.respcd", "Transaction status (data.respcd)")

-- Response data fields (spec section 6); JSON name -> field key
local RESP_FIELDS = {
  { "mchntnm", "mchntnm", "Merchant name" }, { "sysdtm", "sysdtm", "QF system time" },
  { "userid", "userid", "Store ID" }, { "busicd", "busicd", "Business code (PayType)" },
  { "txamt", "txamt", "Amount (cents)" }, { "txcurrcd", "txcurrcd", "Currency" },
  { "chnlsn", "chnlsn", "Channel order number" }, { "paydtm", "paydtm", "Payment time" },
  { "udid", "udid", "Device/user ID" }, { "syssn", "syssn", "QF order ID (syssn)" },
  { "clisn", "clisn", "Client serial number" }, { "cardscheme", "cardscheme", "Card scheme" },
  { "orig_syssn", "orig_syssn", "Original order ID" }, { "originTxamt", "origin_txamt", "Original amount" },
  { "server_time", "server_time", "Server time" }, { "cancel", "cancel", "Cancel status" },
  { "opuid", "opuid", "Operator ID" }, { "tradetp", "tradetp", "Trade type" },
  { "origssn", "origssn", "Original order ID (origssn)" }, { "opuser", "opuser", "Operator name" },
  { "nickname", "nickname", "Store name" }, { "allow_refund_amt", "allow_refund_amt", "Refundable amount" },
  { "desc", "desc", "Description" }, { "origbusicd", "origbusicd", "Original PayType" },
  { "cardno", "cardno", "Masked card number" }, { "cardNo", "cardno", nil },
  { "cardtype", "cardtype", "Card type" }, { "cardType", "cardtype", nil },
  { "batchno", "batchno", "Batch number" }, { "batchNo", "batchno", nil },
  { "refno", "refno", "Reference number" }, { "terminalId", "terminal_id", "Terminal ID" },
  { "paymentType", "payment_type", "Payment type" },
}
local RESP_MAP = {}
for _, r in ipairs(RESP_FIELDS) do
  if r[3] then F["r_" .. r[2]] = ProtoField.string("ecr." .. r[2], r[3]) end
  RESP_MAP[r[1]] = "r_" .. r[2]
end

do
  local list = {}
  for _, f in pairs(F) do list[#list + 1] = f end
  ecr.fields = list
end

------------------------------------------------------------------------
-- Expert info
------------------------------------------------------------------------
-- The analyzer's finding codes with their severities: the same table as
-- `ecr-sniff codes` (dissector/test/run.sh and tests/dissector_codes.rs compare
-- them, so a difference fails). Each code is the expert info "ecr.<code>" with
-- '-' written '_'; severity info = Note, warning = Warning, error = Error.
-- BEGIN CODES
local CODES = {
  { "garbage-bytes", "warning", "MALFORMED" },
  { "bad-end-marker", "error", "MALFORMED" },
  { "unsupported-version", "error", "PROTOCOL" },
  { "unknown-frame-type", "error", "PROTOCOL" },
  { "bad-ref", "warning", "PROTOCOL" },
  { "bad-length", "error", "MALFORMED" },
  { "oversize-frame", "warning", "PROTOCOL" },
  { "reassembly-timeout", "error", "REASSEMBLE" },
  { "ack-timeout", "error", "SEQUENCE" },
  { "unexpected-ack", "warning", "SEQUENCE" },
  { "error-frame", "error", "RESPONSE_CODE" },
  { "bad-envelope", "error", "MALFORMED" },
  { "decrypt-failed", "error", "DECRYPTION" },
  { "no-key", "info", "DECRYPTION" },
  { "digest-mismatch", "error", "CHECKSUM" },
  { "unknown-func-type", "warning", "PROTOCOL" },
  { "unknown-channel", "warning", "PROTOCOL" },
  { "missing-field", "error", "PROTOCOL" },
  { "http-method", "error", "PROTOCOL" },
  { "http-path-mismatch", "warning", "PROTOCOL" },
  { "error-response", "warning", "RESPONSE_CODE" },
  { "cancelled", "info", "RESPONSE_CODE" },
  { "no-response", "error", "SEQUENCE" },
  { "unanswered-at-end", "info", "SEQUENCE" },
  { "partial-card-refund", "warning", "PROTOCOL" },
  { "payme-timeout", "warning", "PROTOCOL" },
  { "line-settings", "warning", "PROTOCOL" },
}
-- Codes this dissector does not raise, and who reports them in Wireshark instead.
local CODES_ELSEWHERE = {
  ["tcp-gap"] = "Wireshark's TCP analysis (tcp.analysis.lost_segment)",
  ["truncated-packet"] = "Wireshark marks packets cut by the snap length",
  ["tls-encrypted"] = "Wireshark's TLS dissector (decrypts with tls.keylog_file)",
  ["tls-no-secret"] = "Wireshark's TLS dissector (without the secrets it shows only encrypted records)",
  ["tls-decrypt-failed"] = "Wireshark's TLS dissector (it reports records that fail to decrypt)",
  ["damaged-packet"] = "Wireshark reports capture records it cannot read",
  ["cors-blocked"] = "ecr-sniff analyze (it compares a browser's request headers with the answer's CORS headers)",
  ["ecr-on-other-port"] = "Decode As (TCP port) in Wireshark; ecr-sniff analyze points at the port",
  ["limit-evicted"] = "ecr-sniff analyze's memory budget (Wireshark keeps its own state)",
}
-- END CODES
local SEVERITY = { info = expert.severity.NOTE, warning = expert.severity.WARN, error = expert.severity.ERROR }
local CODE_TITLES = {
  ["garbage-bytes"] = "Bytes outside any frame", ["bad-end-marker"] = "Bad end indicator",
  ["unsupported-version"] = "Unsupported version", ["unknown-frame-type"] = "Unknown payload type",
  ["bad-ref"] = "Reference number outside 1..127", ["bad-length"] = "Bad length",
  ["oversize-frame"] = "Frame carries more than 1024 data bytes",
  ["reassembly-timeout"] = "Split message not completed in time", ["ack-timeout"] = "Answer later than 1000 ms",
  ["unexpected-ack"] = "Answer without a request", ["error-frame"] = "Error frame",
  ["bad-envelope"] = "Not a request or response envelope", ["decrypt-failed"] = "Decryption failed",
  ["no-key"] = "Encrypted, no POS-KEY given", ["digest-mismatch"] = "Digest mismatch",
  ["unknown-func-type"] = "Unknown func_type", ["unknown-channel"] = "Unknown channel",
  ["missing-field"] = "Missing mandatory field", ["http-method"] = "ECR request not sent with POST",
  ["http-path-mismatch"] = "HTTP path does not match func_type",
  ["error-response"] = "Response code is not 6000",
  ["cancelled"] = "Cancelled by the cashier or customer (respcd 6001)", ["no-response"] = "Request got no response",
  ["unanswered-at-end"] = "Request unanswered when the capture ended",
  ["partial-card-refund"] = "Partial same-day refund of a card payment",
  ["payme-timeout"] = "PayMe payment_timeout above 120 s",
  ["line-settings"] = "Serial line not set to 9600 8N1",
}
local E = {}
do
  local list = {}
  for _, c in ipairs(CODES) do
    local e = ProtoExpert.new("ecr." .. c[1]:gsub("-", "_"), CODE_TITLES[c[1]] or c[1], expert.group[c[3]], SEVERITY[c[2]])
    E[c[1]] = e
    list[#list + 1] = e
  end
  -- Dissector-only notes, not analyzer findings.
  E.truncated = ProtoExpert.new("ecr.truncated", "Frame cut off (capture ended or bytes dropped)", expert.group.MALFORMED, expert.severity.WARN)
  E.key_hex = ProtoExpert.new("ecr.key_hex", "POS-KEY used as hex-decoded bytes", expert.group.DECRYPTION, expert.severity.NOTE)
  E.internal = ProtoExpert.new("ecr.internal_error", "Dissector internal error", expert.group.MALFORMED, expert.severity.ERROR)
  list[#list + 1] = E.truncated
  list[#list + 1] = E.key_hex
  list[#list + 1] = E.internal
  ecr.experts = list
end

------------------------------------------------------------------------
-- Preferences
------------------------------------------------------------------------
-- POS-KEYs are secrets: there is no preference that holds one (Wireshark 4.0's
-- Lua preferences cannot be masked, are listed in the protocol's context menu and
-- are written to the preferences file). Keys come from a key file, as Wireshark's
-- own TLS key log setting works, and from the ECR_POS_KEY environment variable.
ecr.prefs.key_file = Pref.string("POS-KEY file", "",
  "File with the POS-KEYs to decrypt and verify with, one per line (as ecr-sniff --key-file reads): "
  .. "KEY, or ADDRESS=KEY to bind a key to a terminal (192.168.1.20=KEY or 192.168.1.20:9001=KEY); "
  .. "'#' starts a comment. A key has 16, 24 or 32 characters; 32 hex digits are also tried as 16 bytes. "
  .. "The ECR_POS_KEY environment variable adds one more key. Keys are never shown.")
ecr.prefs.tcp_port = Pref.uint("TCP port", 9002, "TCP port of the ECR socket protocol")
ecr.prefs.http_port = Pref.uint("HTTP port", 9001, "TCP port of the ECR HTTP protocol (plain HTTP, or HTTPS decrypted by Wireshark's TLS)")
ecr.prefs.usb_heuristic = Pref.bool("Find ECR traffic in USB captures", true, "Look for ECR frames in the bulk transfers of USB-serial adapters (usbmon, USBPcap). Off: only devices chosen with Decode As (USB device) are decoded")
ecr.prefs.reasm_timeout = Pref.uint("Reassembly timeout (ms)", 500, "Maximum gap between fragments of a split message (D1)")

-- Keys read from the key file and the environment: { { key = text, bind = nil | "ip" | "ip:port" } }
local loaded_keys, key_file_error = nil, nil
local function load_keys()
  local out = {}
  key_file_error = nil
  local path = ecr.prefs.key_file or ""
  if path ~= "" then
    local f, err = io.open(path, "rb")
    if not f then
      key_file_error = "cannot read POS-KEY file: " .. tostring(err)
    else
      local text = f:read("*a") or ""
      f:close()
      if ssub(text, 1, 3) == "\239\187\191" then text = ssub(text, 4) end -- UTF-8 BOM
      local lineno = 0
      for line in (text .. "\n"):gmatch("([^\n]*)\n") do
        lineno = lineno + 1
        line = line:match("^%s*(.-)%s*$")
        if line ~= "" and ssub(line, 1, 1) ~= "#" then
          local addr, k = line:match("^([%x%.:%[%]]+)%s*=%s*(.+)$")
          if addr and (addr:find("%.") or addr:find(":.*:")) then
            out[#out + 1] = { key = k, bind = addr:gsub("[%[%]]", "") }
          else
            out[#out + 1] = { key = line }
          end
          local n = #out[#out].key
          if n ~= 16 and n ~= 24 and n ~= 32 then
            key_file_error = sformat("POS-KEY file %s line %d: a key has 16, 24 or 32 characters, this one %d", path, lineno, n)
          end
        end
      end
      if #out == 0 then key_file_error = "POS-KEY file " .. path .. " holds no key" end
    end
  end
  local env = os.getenv("ECR_POS_KEY")
  if env and env:match("%S") then out[#out + 1] = { key = env:match("^%s*(.-)%s*$") } end
  loaded_keys = out
end

-- The keys to try for traffic with the terminal at addr (a string) and port:
-- its bound keys first, then every unbound key.
local keys_for_cache = {}
local function keys_for(addr, port)
  if not loaded_keys then load_keys() end
  local ck = tostring(addr) .. "|" .. tostring(port)
  local r = keys_for_cache[ck]
  if r then return r end
  r = {}
  for _, k in ipairs(loaded_keys) do
    if k.bind and (k.bind == addr or k.bind == (tostring(addr) .. ":" .. tostring(port))) then r[#r + 1] = k.key end
  end
  for _, k in ipairs(loaded_keys) do
    if not k.bind then r[#r + 1] = k.key end
  end
  keys_for_cache[ck] = r
  return r
end

local function reload_keys()
  loaded_keys, keys_for_cache = nil, {}
end

------------------------------------------------------------------------
-- Tree helpers
------------------------------------------------------------------------
-- Range of a parsed node inside tvb (nil if positions do not map).
local function node_range(tvb, node)
  if not tvb or not node or not node.s or not node.e then return nil end
  local len = tvb:len()
  local off = node.s - 1
  local n = node.e - node.s + 1
  if off < 0 or n <= 0 or off + n > len then return nil end
  return tvb(off, n)
end

local function add_item(tree, field, range, value)
  if range then return tree:add(field, range, value) end
  return tree:add(field, value)
end

local function node_text(v)
  if not v then return nil end
  if v.t == "str" then return v.v end
  if v.t == "num" or v.t == "bool" then return v.raw end
  if v.t == "null" then return "" end
  return nil
end

-- An amount as the tree's double field (ecr.amt) shows it, so that Info and an
-- Amount column agree ("10.1" for 10.10; the tree adds "sent as 10.10").
local function fmt_amount(v)
  if v == nil then return "?" end
  return sformat("%.15g", v)
end

------------------------------------------------------------------------
-- Message (body) dissection
------------------------------------------------------------------------
local dissect_text -- forward
local message_pairing -- forward
local usb_reset -- forward

-- ctx: { pinfo, infos (list), key, srctvb }
local function add_expert(ctx, item, e, text)
  if item then item:add_proto_expert_info(e, text) end
end

local function show_request_content(ctx, tree, tvb, obj)
  local ft_node = obj.vals.func_type
  local ft
  local ctree = tree:add(ecr, node_range(tvb, obj) or tvb(0, 0), "Content")
  ctree:set_text("Content")
  for _, k in ipairs(obj.keys) do
    local v = obj.vals[k]
    local rng = node_range(tvb, v)
    local txt = node_text(v)
    if k == "func_type" then
      ft = v.v or tonumber(txt or "")
      if ft and ft == floor(ft) and ft >= 0 and ft < 4294967296 then
        local it = add_item(ctree, F.func_type, rng, ft)
        if not FUNC_TYPES[ft] then add_expert(ctx, it, E["unknown-func-type"], "Unknown func_type " .. tostring(txt)) end
      else
        local it = add_item(ctree, F.param, rng, "func_type=" .. tostring(txt))
        add_expert(ctx, it, E["unknown-func-type"], "func_type is not a number: " .. tostring(txt))
        ft = nil
      end
    elseif k == "amt" then
      local n = tonumber(txt or "")
      if n then
        local it = add_item(ctree, F.amt, rng, n)
        if txt ~= tostring(n) then it:append_text(" (sent as " .. txt .. ")") end
      else
        add_item(ctree, F.param, rng, "amt=" .. tostring(txt))
      end
    elseif k == "channel" then
      local it = add_item(ctree, F.channel, rng, txt or "")
      local ch = CHANNELS[txt or ""]
      if ch then
        it:append_text(" (" .. ch[1] .. ")")
        local pt = ctree:add(F.paytype, ch[2]); pt:set_generated()
      else
        add_expert(ctx, it, E["unknown-channel"], "Unknown channel " .. tostring(txt))
      end
    elseif k == "out_trade_no" then add_item(ctree, F.out_trade_no, rng, txt or "")
    elseif k == "orderId" then add_item(ctree, F.order_id, rng, txt or "")
    elseif k == "refund_amount" then add_item(ctree, F.refund_amount, rng, txt or "")
    elseif k == "scan_type" then add_item(ctree, F.scan_type, rng, txt or "")
    elseif (k == "camera_id" or k == "payment_timeout" or k == "wait_card_timeout" or k == "moveToBack"
            or k == "allow_modify_flag") and tonumber(txt or "") and math.abs(tonumber(txt)) < 2147483648 then
      local fk = ({ moveToBack = "move_to_back" })[k] or k
      add_item(ctree, F[fk], rng, floor(tonumber(txt)))
    else
      local shown = txt
      if not shown then shown = format_value(v, { quote = "'", sorted = true }) end
      add_item(ctree, F.param, rng, k .. "=" .. shown)
    end
  end
  local pt = tonumber(node_text(obj.vals.payment_timeout) or "")
  if pt and pt > 120 and node_text(obj.vals.channel) == "payme" then
    add_expert(ctx, ctree, E["payme-timeout"], sformat("PayMe supports payment_timeout up to 120 s, got %s", node_text(obj.vals.payment_timeout)))
  end
  ctx.func_type = ft
  ctx.msg = { role = "request", ft = ft, channel = node_text(obj.vals.channel), amt = node_text(obj.vals.amt),
              order_id = node_text(obj.vals.orderId), out_trade_no = node_text(obj.vals.out_trade_no),
              refund_amount = node_text(obj.vals.refund_amount) }
  -- mandatory fields
  if ft_node == nil then
    add_expert(ctx, ctree, E["missing-field"], "Missing mandatory field func_type")
  end
  local req = MANDATORY[ft or -1]
  if req then
    for _, alt in ipairs(req) do
      local found = false
      for name in alt:gmatch("[^|]+") do
        if obj.vals[name] ~= nil then found = true end
      end
      if not found then
        add_expert(ctx, ctree, E["missing-field"], "Missing mandatory field " .. alt:gsub("|", " or "))
      end
    end
  end
  -- info
  local parts = {}
  if ft then parts[1] = FUNC_SHORT[ft] or ("func_type " .. ft)
  else parts[1] = "Request" end
  if ft == 1001 or (ft == nil and obj.vals.amt) then
    if obj.vals.amt then parts[#parts + 1] = fmt_amount(tonumber(node_text(obj.vals.amt) or "")) end
    if obj.vals.channel then parts[#parts + 1] = node_text(obj.vals.channel) end
  elseif ft == 1002 then
    if obj.vals.orderId then parts[#parts + 1] = node_text(obj.vals.orderId) end
    if obj.vals.refund_amount then parts[#parts + 1] = node_text(obj.vals.refund_amount) end
  else
    local id = obj.vals.orderId or obj.vals.out_trade_no
    if id then parts[#parts + 1] = node_text(id) end
  end
  for i, v in ipairs(parts) do
    if #v > 40 then parts[i] = ssub(v, 1, 37) .. "..." end
  end
  return ctree, tconcat(parts, " ")
end

local function show_digest(ctx, tree, tvb, digest_node, status, computed, variant, hint, fc)
  local dtxt = digest_node and node_text(digest_node) or nil
  local dit
  if digest_node then
    dit = add_item(tree, F.digest, node_range(tvb, digest_node), dtxt or "")
  else
    dit = tree:add(F.digest, "")
    dit:append_text(" (absent)")
    add_expert(ctx, dit, E["missing-field"], "Missing digest")
  end
  local sit = tree:add(F.digest_status, status)
  sit:set_generated()
  if fc then local it = tree:add(F.format_content, fc); it:set_generated() end
  if computed then local it = tree:add(F.digest_computed, computed); it:set_generated() end
  if variant then local it = tree:add(F.digest_variant, variant); it:set_generated() end
  if status == "mismatch" then
    local msg = "Digest mismatch: got " .. tostring(dtxt) .. ", expected " .. tostring(computed)
    if hint then msg = msg .. "; " .. hint end
    add_expert(ctx, sit, E["digest-mismatch"], msg)
  end
  ctx.digest_status = status
end

local function new_text_tvb(text, name)
  return ByteArray.new(text, true):tvb(name)
end

-- A message that could not be decrypted: no-key (info) or decrypt-failed (error).
local function note_decrypt_failure(ctx, item, why, prefix)
  if why == "no POS-KEY configured" then
    if key_file_error then why = why .. "; " .. key_file_error end
    add_expert(ctx, item, E["no-key"], prefix .. why)
    ctx.no_key = true
  else
    if key_file_error then why = why .. "; " .. key_file_error end
    add_expert(ctx, item, E["decrypt-failed"], prefix .. why)
    ctx.decrypt_failed = true
  end
end

local function show_key_interp(ctx, tree, interp)
  local it = tree:add(F.key_interp, interp)
  it:set_generated()
  if interp:find("^hex") then add_expert(ctx, it, E.key_hex, "POS-KEY worked only hex-decoded (16 bytes, AES-128)") end
end

local function show_response(ctx, tree, tvb, obj, dialect)
  local rtree = tree:add(ecr, node_range(tvb, obj) or tvb(0, 0), "Response")
  rtree:set_text("Response")
  local d0 = obj.vals.data
  if dialect == "plain" and d0 and d0.t == "str" and d0.v ~= "" then
    local inner = json_parse(d0.v)
    if not (inner and inner.t == "obj") and looks_base64(d0.v) then dialect = "data-encrypted" end
  end
  local dit = rtree:add(F.dialect, dialect); dit:set_generated()
  local kit = rtree:add(F.kind, "response"); kit:set_generated()
  local respcd = node_text(obj.vals.respcd) or ""
  local facts = { role = "response", respcd = respcd }
  ctx.msg = facts
  local cit = add_item(rtree, F.respcd, node_range(tvb, obj.vals.respcd), respcd)
  local meaning = RESPCD[respcd]
  if meaning then
    cit:append_text(" (" .. meaning .. ")")
    local m = rtree:add(F.respcd_meaning, meaning); m:set_generated()
  end
  if respcd == "6001" then
    -- A cashier's or customer's cancel: a normal outcome (info), as in the CLI.
    add_expert(ctx, cit, E["cancelled"], "Response code 6001" .. (meaning and (" (" .. meaning .. ")") or ""))
  elseif respcd ~= "6000" then
    add_expert(ctx, cit, E["error-response"], "Response code " .. respcd .. (meaning and (" (" .. meaning .. ")") or ""))
  end
  local respmsg = node_text(obj.vals.respmsg)
  if obj.vals.respmsg then add_item(rtree, F.respmsg, node_range(tvb, obj.vals.respmsg), respmsg or "") end
  if obj.vals.resperr then add_item(rtree, F.resperr, node_range(tvb, obj.vals.resperr), node_text(obj.vals.resperr) or "") end
  local info = "Response " .. respcd
  if respmsg and respmsg ~= "" then info = info .. " " .. respmsg
  elseif meaning then info = info .. " " .. meaning end
  -- data: a string holding JSON (or an object, or encrypted)
  local dnode = obj.vals.data
  if dnode and dnode.t ~= "null" then
    local dobj, dtvb, dtree
    if dnode.t == "obj" then
      dobj, dtvb = dnode, tvb
      dtree = rtree:add(ecr, node_range(tvb, dnode) or tvb(0, 0), "Business data")
    elseif dnode.t == "str" and dnode.v ~= "" then
      local dtext = dnode.v
      add_item(rtree, F.resp_data, node_range(tvb, dnode), dtext)
      local parsed = json_parse(dtext)
      if parsed and parsed.t == "obj" then
        dtvb = new_text_tvb(dtext, "Business data")
        dobj = parsed
      elseif looks_base64(dtext) then
        local plain, why = decrypt_b64(dtext, ctx.keys)
        if plain then
          dtvb = new_text_tvb(plain, "Decrypted business data")
          local p2 = json_parse(plain)
          if p2 and p2.t == "obj" then dobj = p2 end
          show_key_interp(ctx, rtree, why)
        else
          local it = rtree:add(F.resp_data, "(encrypted)")
          note_decrypt_failure(ctx, it, why, "Business data: ")
        end
      end
      if dobj then dtree = rtree:add(ecr, dtvb(), "Business data") end
    end
    if dobj and dtree then
      dtree:set_text("Business data")
      local txamt, cur
      for _, k in ipairs(dobj.keys) do
        local v = dobj.vals[k]
        local txt = node_text(v) or format_value(v, { quote = "'", sorted = true })
        local rng = node_range(dtvb, v)
        local fk = RESP_MAP[k]
        if k == "syssn" or k == "out_trade_no" or k == "txamt" then facts[k] = txt end
        if k == "out_trade_no" then add_item(dtree, F.out_trade_no, rng, txt)
        elseif k == "respcd" then add_item(dtree, F.data_respcd, rng, txt)
        elseif fk and F[fk] then
          local it = add_item(dtree, F[fk], rng, txt)
          if k == "busicd" and PAYTYPES[txt] then
            it:append_text(" (" .. PAYTYPES[txt] .. ")")
            local pt = dtree:add(F.paytype, txt); pt:set_generated()
          elseif k == "txcurrcd" and CURRENCIES[txt] then it:append_text(" (" .. CURRENCIES[txt] .. ")")
          elseif k == "txamt" then txamt = txt end
          if k == "txcurrcd" then cur = txt end
        else
          add_item(dtree, F.param, rng, k .. "=" .. txt)
        end
      end
      if txamt and tonumber(txamt) then
        info = info .. sformat(" %s%.2f", cur and CURRENCIES[cur] and (CURRENCIES[cur] .. " ") or "", tonumber(txamt) / 100)
      end
    end
  end
  ctx.infos[#ctx.infos + 1] = info
  return rtree
end

-- A request envelope object {content:..., digest:...}
local function show_request(ctx, tree, tvb, obj, dialect, env_form)
  local rtree = tree:add(ecr, node_range(tvb, obj) or tvb(0, 0), "Request")
  rtree:set_text("Request")
  local cnode0 = obj.vals.content
  if dialect == "plain" and cnode0 and cnode0.t == "str" then
    local inner = json_parse(cnode0.v)
    if not (inner and inner.t == "obj") then dialect = "content-encrypted" end
  end
  local dit = rtree:add(F.dialect, dialect); dit:set_generated()
  local kit = rtree:add(F.kind, "request"); kit:set_generated()
  if env_form then local it = rtree:add(F.envelope_form, env_form); it:set_generated() end
  local cnode = obj.vals.content
  local dnode = obj.vals.digest
  local keys = ctx.keys
  local dtext = dnode and node_text(dnode) or nil
  local info
  if cnode == nil then
    add_expert(ctx, rtree, E["missing-field"], "Missing mandatory field content")
    info = "Request (no content)"
  elseif cnode.t == "obj" then
    local _, inf = show_request_content(ctx, rtree, tvb, cnode)
    info = inf
    local st, comp, var, hint, fc = verify_digest(cnode, dtext, keys, "plaintext", ctx.env_b64, ctx.signer)
    show_digest(ctx, rtree, tvb, dnode, st, comp, var, hint, fc)
  elseif cnode.t == "str" then
    local ctext = cnode.v
    add_item(rtree, F.content, node_range(tvb, cnode), ctext)
    local inner = json_parse(ctext)
    if inner and inner.t == "obj" then
      -- plain, content carried as a JSON string holding JSON
      local ctvb = new_text_tvb(ctext, "Content JSON")
      local _, inf = show_request_content(ctx, rtree, ctvb, inner)
      info = inf
      local st, comp, var, hint, fc = verify_digest(inner, dtext, keys, "plaintext", nil, nil)
      show_digest(ctx, rtree, tvb, dnode, st, comp, var, hint, fc)
    else
      -- content-encrypted: digest = md5(Base64 text + key)
      local plain, why, ki = decrypt_b64(ctext, keys)
      local pobj
      if plain then
        show_key_interp(ctx, rtree, why)
        local ptvb = new_text_tvb(plain, "Decrypted content")
        local it = rtree:add(F.decrypted, ptvb(), plain); it:set_generated()
        pobj = json_parse(plain)
        local _, inf = show_request_content(ctx, rtree, ptvb, pobj)
        info = inf
      else
        local it = rtree:add(F.content, "(encrypted)")
        note_decrypt_failure(ctx, it, why, "Content: ")
        info = "Request (encrypted)"
      end
      local st, comp, var, hint = verify_digest(pobj, dtext, keys, "ciphertext", ctext, ki)
      show_digest(ctx, rtree, tvb, dnode, st, comp, var, hint, nil)
    end
  else
    add_expert(ctx, rtree, E["bad-envelope"], "content is neither an object nor a string")
    info = "Request (bad content)"
  end
  ctx.dialect = dialect
  ctx.infos[#ctx.infos + 1] = info
  return rtree
end

-- Decode a message text (a complete HTTP body, TCP message or frame data).
-- tvb: the text's tvb. hint: "request"/"response"/nil.
local function dissect_text_inner(ctx, tree, tvb)
  local text = tvb:raw()
  local trimmed = text:match("^%s*(.-)%s*$")
  if trimmed == "" then return end
  local node = json_parse(text)
  if node and node.t == "obj" then
    if node.vals.respcd ~= nil then
      show_response(ctx, tree, tvb, node, "plain")
      return
    elseif node.vals.content ~= nil or node.vals.digest ~= nil then
      show_request(ctx, tree, tvb, node, "plain", nil)
      return
    end
    -- still a message of its side: a request waits for its response (as in the analyzer)
    if ctx.hint then ctx.msg = { role = ctx.hint } end
    local it = tree:add(F.kind, "unknown JSON")
    add_expert(ctx, it, E["bad-envelope"], "JSON object is neither a request (content/digest) nor a response (respcd)")
    ctx.infos[#ctx.infos + 1] = "Unknown JSON"
    return
  end
  local b64, form
  if node and node.t == "str" and not node.unquoted then
    b64, form = node.v, "json-string"
  elseif looks_base64(trimmed) then
    b64, form = trimmed, "bare"
  end
  if not b64 then
    if ctx.hint then ctx.msg = { role = ctx.hint } end
    local it = tree:add(F.kind, "unparsed")
    add_expert(ctx, it, E["bad-envelope"], "Not JSON and not Base64" .. ((node == nil) and "" or ""))
    ctx.infos[#ctx.infos + 1] = "Unparsed data"
    return
  end
  local plain, why, ki = decrypt_b64(b64, ctx.keys)
  if not plain then
    local it
    if ctx.hint == "request" then
      -- a request body that is only Base64 can only be envelope-encrypted (D4)
      ctx.msg = { role = "request" }
      it = tree:add(F.kind, "request"); it:set_generated()
      local d = tree:add(F.dialect, "envelope-encrypted"); d:set_generated()
    elseif ctx.hint == "response" then
      ctx.msg = { role = "response" }
      it = tree:add(F.kind, "response"); it:set_generated()
      local d = tree:add(F.dialect, "encrypted"); d:set_generated()
    else
      it = tree:add(F.kind, "encrypted")
    end
    local fit = tree:add(F.envelope_form, form); fit:set_generated()
    note_decrypt_failure(ctx, it, why, "Encrypted message: ")
    ctx.infos[#ctx.infos + 1] = (ctx.hint == "request" and "Encrypted request") or (ctx.hint == "response" and "Encrypted response") or "Encrypted message"
    ctx.dialect = "encrypted"
    return
  end
  local ptvb = new_text_tvb(plain, "Decrypted")
  local dtree = tree:add(ecr, ptvb(), "Decrypted message")
  dtree:set_text("Decrypted message")
  local it = dtree:add(F.decrypted, ptvb(), plain); it:set_generated()
  show_key_interp(ctx, dtree, why)
  local pnode, perr = json_parse(plain)
  if pnode and pnode.t == "obj" then
    if pnode.vals.respcd ~= nil then
      show_response(ctx, dtree, ptvb, pnode, "encrypted")
      return
    end
    ctx.env_b64, ctx.signer = b64, ki
    show_request(ctx, dtree, ptvb, pnode, "envelope-encrypted", form)
    ctx.env_b64, ctx.signer = nil, nil
    return
  end
  add_expert(ctx, it, E["bad-envelope"], "Decrypted text is not a JSON object: " .. tostring(perr))
  ctx.infos[#ctx.infos + 1] = "Decrypted, unparsed"
end

------------------------------------------------------------------------
-- Request/response pairing of business messages (as the analyzer pairs them):
-- a request from the cash register waits for the next response on its
-- connection (HTTP pipelining and D2's result frames alike); an error frame
-- from the terminal withdraws the request with its ref. First pass only; the
-- results are memoised per message and shown on every later pass.
------------------------------------------------------------------------
local msg_memo = {}      -- message key -> record
local msg_queue = {}     -- conversation -> list of waiting request records
local msg_requests = {}  -- every request record (for the end of the capture)
local payments = {}      -- syssn / out_trade_no -> { cents, channel, day } of successful payments
local payments_n = 0
local conv_closed = {}   -- conversation -> { ts, reason } of the last close (FIN from the terminal, RST) seen while a request waited
local capture_last_ts = 0
local MAX_PAYMENTS = 10000
local MAX_WAITING = 1024 -- requests waiting per connection

local CARD_CHANNELS = { card_payment = true, unionpay_card = true, amex_card = true }

local function to_cents(text)
  local v = tonumber(text or "")
  if not v or v ~= v or math.abs(v) > 1e12 then return nil end
  return floor(v * 100 + 0.5)
end
local function cents_text(c) return sformat("%d.%02d", floor(c / 100), c % 100) end
local function day_of(ts) return floor(ts / 86400) end

message_pairing = function(ctx, tree, msg)
  local pinfo = ctx.pinfo
  local conv = ctx.conv
  if not conv or ctx.from_ecr == nil then return end
  ctx.msg_seq = (ctx.msg_seq or 0) + 1
  local key = pinfo.number .. ":" .. tostring(ctx.top_len) .. ":" .. ctx.msg_seq
  local r = msg_memo[key]
  if not r and not pinfo.visited then
    local ts = pinfo.abs_ts
    if msg.role == "request" and ctx.from_ecr then
      r = { kind = "request", frame = pinfo.number, ts = ts, conv = conv, ref = ctx.frame_ref, facts = msg }
      local q = msg_queue[conv]
      if not q then q = {}; msg_queue[conv] = q end
      -- bounded: past MAX_WAITING the oldest waiting request stays unanswered
      if #q >= MAX_WAITING then table.remove(q, 1) end
      q[#q + 1] = r
      if #msg_requests < 100000 then msg_requests[#msg_requests + 1] = r end
      -- a same-day partial refund of a card payment seen earlier (spec 3.2)
      if msg.ft == 1002 and msg.order_id then
        local p = payments[msg.order_id]
        local refund = to_cents(msg.refund_amount)
        if p and refund and p.cents and refund < p.cents and day_of(ts) == p.day and CARD_CHANNELS[p.channel] then
          r.partial = sformat("refund of %s of a %s payment of %s made the same day (frame %d): card payments can only be refunded in full on the day",
            msg.refund_amount, p.channel, cents_text(p.cents), p.frame)
        end
      end
    elseif msg.role == "response" and not ctx.from_ecr then
      local q = msg_queue[conv]
      local req = q and table.remove(q, 1)
      if req then
        req.resp = pinfo.number
        req.dt = ts - req.ts
        r = { kind = "response", req = req.frame, dt = ts - req.ts }
        local f = req.facts
        if f.ft == 1001 and msg.respcd == "6000" and payments_n < MAX_PAYMENTS then
          local pay = { cents = tonumber(msg.txamt or "") or to_cents(f.amt), channel = f.channel or "", day = day_of(req.ts), frame = req.frame }
          for _, id in ipairs({ msg.syssn, f.out_trade_no, msg.out_trade_no }) do
            if id and id ~= "" then payments[id] = pay; payments_n = payments_n + 1 end
          end
        end
      else
        r = { kind = "response" }
      end
    end
    if r then msg_memo[key] = r end
  end
  if not r then return end
  if r.kind == "request" then
    if r.resp then
      local x = tree:add(F.response_in, r.resp); x:set_generated()
      local y = tree:add(F.latency, floor(r.dt * 1000000 + 0.5) / 1000); y:set_generated()
    elseif pinfo.visited then
      -- the whole capture has been read: say why no response came
      local name = (r.facts.ft and FUNC_SHORT[r.facts.ft]) or "Request"
      local c = conv_closed[r.conv]
      if r.withdrawn then
        -- refused at the link level by an error frame: no response expected
      elseif c and c.ts >= r.ts then
        add_expert(ctx, tree, E["no-response"], sformat("%s got no response: the connection ended (%s) %.0f ms after it was sent", name, c.reason, (c.ts - r.ts) * 1000))
      else
        add_expert(ctx, tree, E["unanswered-at-end"], sformat("%s was still waiting for its response when the capture ended (%.0f ms after it was sent)", name, (capture_last_ts - r.ts) * 1000))
      end
    end
    if r.partial then add_expert(ctx, tree, E["partial-card-refund"], r.partial) end
  elseif r.req then
    local x = tree:add(F.request_in, r.req); x:set_generated()
    local y = tree:add(F.latency, floor(r.dt * 1000000 + 0.5) / 1000); y:set_generated()
  end
end

-- An error frame from the terminal withdraws the waiting request with its ref.
local function message_withdrawn(ctx, ref)
  if ctx.pinfo.visited or not ctx.conv then return end
  local q = msg_queue[ctx.conv]
  if not q then return end
  for i = #q, 1, -1 do
    if q[i].ref ~= nil and q[i].ref == ref then q[i].withdrawn = true; table.remove(q, i) end
  end
end

-- One message: its Info text gets a visible mark when its digest does not match
-- or it could not be decrypted.
dissect_text = function(ctx, tree, tvb)
  ctx.digest_status, ctx.decrypt_failed, ctx.no_key, ctx.msg = nil, nil, nil, nil
  local before = #ctx.infos
  dissect_text_inner(ctx, tree, tvb)
  if ctx.orient then ctx.orient(ctx) end
  if ctx.msg then message_pairing(ctx, tree, ctx.msg) end
  local n = #ctx.infos
  if n > before then
    local marks = {}
    if ctx.digest_status == "mismatch" then marks[#marks + 1] = "DIGEST MISMATCH" end
    if ctx.decrypt_failed then marks[#marks + 1] = "DECRYPTION FAILED" end
    if ctx.no_key then marks[#marks + 1] = "no key" end
    if #marks > 0 then ctx.infos[n] = ctx.infos[n] .. " [" .. tconcat(marks, ", ") .. "]" end
  end
end

------------------------------------------------------------------------
-- Frames (D1)
------------------------------------------------------------------------
local KNOWN_TYPES = { [0x10] = true, [0x20] = true, [0x30] = true, [0x31] = true, [0x32] = true, [0x33] = true, [0x34] = true, [0x35] = true }
local MARK = "/n"

-- Next position >= p where a plausible frame starts ("/n" 01 known-type),
-- or where a prefix of one sits at the end of s.
local function find_candidate(s, p)
  local n = #s
  local i = p
  while true do
    local j = sfind(s, "/n", i, true)
    if not j then
      if ssub(s, n, n) == "/" and n >= p then return n end
      return nil
    end
    local v, t = sbyte(s, j + 2, j + 3)
    if v == nil then return j end
    if v == 1 and (t == nil or KNOWN_TYPES[t]) then return j end
    i = j + 1
  end
end

local function u16(s, p) local a, b = sbyte(s, p, p + 1); return a * 256 + b end

-- Parse s from p. Returns items, rest_pos (first byte not consumed) and need
-- (bytes missing for the pending frame, or nil = unknown/one more chunk).
-- item = { kind = "frame"|"junk", off = 1-based, len, ... }
local function parse_frames(s, p, opts)
  local items = {}
  local n = #s
  opts = opts or {}
  while p <= n do
    local rem = n - p + 1
    if ssub(s, p, p + 1) == MARK or (rem == 1 and ssub(s, p, p) == "/") then
      if rem < 9 then return items, p, 9 - rem end
      local ver, typ, ref = sbyte(s, p + 2, p + 4)
      local tl, dl = u16(s, p + 5), u16(s, p + 7)
      local plausible = ver == 1 and KNOWN_TYPES[typ]
      if tl < 11 then
        items[#items + 1] = { kind = "frame", off = p, len = 9, ver = ver, typ = typ, ref = ref, tl = tl, dl = dl, bad_tl = true }
        p = p + 9
      elseif rem < tl then
        if plausible then return items, p, tl - rem end
        -- not a plausible frame header: treat the marker as junk and resync
        local j = find_candidate(s, p + 1) or (n + 1)
        items[#items + 1] = { kind = "junk", off = p, len = j - p }
        p = j
      else
        local end_ok = ssub(s, p + tl - 2, p + tl - 1) == MARK
        if end_ok or plausible then
          items[#items + 1] = { kind = "frame", off = p, len = tl, ver = ver, typ = typ, ref = ref, tl = tl, dl = dl, end_ok = end_ok }
          p = p + tl
        else
          local j = find_candidate(s, p + 1) or (n + 1)
          items[#items + 1] = { kind = "junk", off = p, len = j - p }
          p = j
        end
      end
    else
      local j = find_candidate(s, p + 1)
      -- A frame whose start marker is damaged: header and end marker fit.
      if rem >= 11 then
        local ver, typ = sbyte(s, p + 2, p + 3)
        local tl = u16(s, p + 5)
        if ver == 1 and KNOWN_TYPES[typ] and tl >= 11 and tl <= rem and ssub(s, p + tl - 2, p + tl - 1) == MARK
           and (j == nil or j >= p + tl - 2) then
          items[#items + 1] = { kind = "frame", off = p, len = tl, ver = ver, typ = typ, ref = sbyte(s, p + 4), tl = tl, dl = u16(s, p + 7), end_ok = true, bad_start = true }
          p = p + tl
          j = -1
        end
      end
      if j ~= -1 then
        j = j or (n + 1)
        items[#items + 1] = { kind = "junk", off = p, len = j - p }
        p = j
      end
    end
  end
  return items, p, nil
end

------------------------------------------------------------------------
-- Reassembly state (first pass only; results memoised per packet)
------------------------------------------------------------------------
local pending = {}     -- key -> { data = {parts}, got, total, frames = {}, last_ts }
local reasm = {}       -- "pkt:ref:dir:off" -> result table
local serial_carry = {} -- direction -> carried bytes (serial raw-chunk mode)
local serial_pkts = {} -- pinfo.number -> { buf=, carry_len= }
local serial_last = {} -- direction -> last packet record (to link continuations)

local stream_mode = {} -- TCP stream+direction -> "frames" once it started with a frame (D6)
local outstanding = {} -- conversation .. ":" .. direction .. ":" .. ref -> { frame, ts, rec }
local pairing = {}     -- memo key -> { req = frame, dt = s } | { unexpected = true } | request record

function ecr.init()
  outstanding, pairing = {}, {}
  pending, reasm, serial_carry, serial_pkts, serial_last = {}, {}, {}, {}, {}
  stream_mode = {}
  decrypt_cache, decrypt_cache_n = {}, 0
  reload_keys()
  msg_memo, msg_queue, msg_requests, payments, payments_n, conv_closed, capture_last_ts = {}, {}, {}, {}, 0, {}, 0
  usb_reset()
end

-- Called for a fragment or a single frame; returns result table:
--  { state = "fragment", reassembled_in = N } | { state = "complete", data = str, frames = {...} }
local function reassemble(pinfo, skey, it, data, memo_key)
  local r = reasm[memo_key]
  if r then return r end
  if pinfo.visited then return { state = "unknown" } end
  local key = skey .. ":" .. it.ref
  local ts = pinfo.abs_ts
  local p = pending[key]
  local problems = {}
  local timeout = (ecr.prefs.reasm_timeout or 500) / 1000
  if p and (p.total ~= it.dl) then
    problems[#problems + 1] = sformat("discarded %d of %d bytes of an earlier message with ref %d (data length changed)", p.got, p.total, it.ref)
    p = nil
  elseif p and ts - p.last_ts > timeout then
    -- D1 receivers discard here (and answer 0x35); we keep going, to show the data
    problems[#problems + 1] = sformat("reassembly timeout: %.0f ms since the previous fragment of ref %d (> %d ms)", (ts - p.last_ts) * 1000, it.ref, timeout * 1000)
  end
  if not p then
    p = { parts = {}, got = 0, total = it.dl, frames = {}, last_ts = ts, records = {} }
    pending[key] = p
  end
  p.parts[#p.parts + 1] = data
  p.got = p.got + #data
  p.frames[#p.frames + 1] = pinfo.number
  p.last_ts = ts
  local rec = { state = "fragment", problems = problems, index = #p.frames, total = p.total, got = p.got }
  p.records[#p.records + 1] = rec
  reasm[memo_key] = rec
  if p.got == p.total then
    pending[key] = nil
    local done = { state = "complete", data = tconcat(p.parts), frames = p.frames, problems = problems, total = p.total }
    for _, r2 in ipairs(p.records) do r2.reassembled_in = pinfo.number end
    reasm[memo_key] = done
    return done
  elseif p.got > p.total then
    pending[key] = nil
    rec.problems[#rec.problems + 1] = sformat("collected %d bytes, more than the data length %d", p.got, p.total)
    rec.state = "overflow"
  end
  return rec
end

-- Request/answer pairing at the link level (D2).
local function link_pairing(ctx, ftree, it, memo_key, is_request)
  local pinfo = ctx.pinfo
  local conv, dir, other = ctx.conv, ctx.dirkey, ctx.otherdir
  if not conv then return end
  local r = pairing[memo_key]
  if not r and not pinfo.visited then
    if is_request then
      r = { kind = "request", ts = pinfo.abs_ts }
      outstanding[conv .. ":" .. dir .. ":" .. it.ref] = { frame = pinfo.number, ts = pinfo.abs_ts, rec = r }
    else
      local k = conv .. ":" .. other .. ":" .. it.ref
      local o = outstanding[k]
      if o then
        outstanding[k] = nil
        r = { kind = "answer", req = o.frame, dt = pinfo.abs_ts - o.ts }
        o.rec.ans = pinfo.number
      else
        r = { kind = "answer", unexpected = true }
      end
    end
    pairing[memo_key] = r
  end
  if not r then return end
  if r.kind == "request" then
    if r.ans then
      local x = ftree:add(F.ack_in, r.ans); x:set_generated()
    elseif pinfo.visited and r.ts then
      -- never answered: late if the capture went on past the deadline (D2)
      local waited = (capture_last_ts - r.ts) * 1000
      if waited > 1000 then
        add_expert(ctx, ftree, E["ack-timeout"], sformat("Request frame ref %d not answered within 1000 ms (the capture went on for %.0f ms)", it.ref, waited))
      else
        add_expert(ctx, ftree, E["unanswered-at-end"], sformat("Request frame ref %d was still waiting for its answer when the capture ended (%.0f ms)", it.ref, waited))
      end
    end
  else
    if r.req then
      local x = ftree:add(F.ack_to, r.req); x:set_generated()
      local ms = floor(r.dt * 1000000 + 0.5) / 1000
      local y = ftree:add(F.ack_time, ms); y:set_generated()
      if ms > 1000 then
        add_expert(ctx, y, E["ack-timeout"], sformat("Answer after %.0f ms (> 1000 ms) to the request in frame %d", ms, r.req))
      end
    elseif r.unexpected then
      add_expert(ctx, ftree, E["unexpected-ack"], sformat("Answer with ref %d matches no outstanding request", it.ref))
    end
  end
end

-- Display one frame. ftvb: tvb whose bytes [foff, foff+len) are the frame.
local function show_frame(ctx, tree, ftvb, foff, it, skey, memo_key)
  local pinfo = ctx.pinfo
  local len = it.len
  local frng = ftvb(foff, len)
  local ftree = tree:add(ecr, frng, "ECR frame")
  local tname = FRAME_TYPES[it.typ] or sformat("Unknown (0x%02x)", it.typ)
  ftree:set_text(sformat("ECR frame: %s, ref %d, %d bytes", tname, it.ref, len))
  local sit = ftree:add(F.start, ftvb(foff, 2))
  if it.bad_start then add_expert(ctx, sit, E["garbage-bytes"], "Bad start indicator (expected 0x2f6e)") end
  local vit = ftree:add(F.version, ftvb(foff + 2, 1))
  if it.ver ~= 1 then add_expert(ctx, vit, E["unsupported-version"], sformat("Version 0x%02x (expected 0x01)", it.ver)) end
  local tit = ftree:add(F.type, ftvb(foff + 3, 1))
  local rit = ftree:add(F.ref, ftvb(foff + 4, 1))
  if it.ref == 0 or it.ref > 0x7f then add_expert(ctx, rit, E["bad-ref"], sformat("Reference number %d outside 1..127", it.ref)) end
  local tlit = ftree:add(F.total_len, ftvb(foff + 5, 2))
  local dlit = ftree:add(F.data_len, ftvb(foff + 7, 2))
  local info
  if it.bad_tl then
    add_expert(ctx, tlit, E["bad-length"], sformat("Total length %d is less than the 11 bytes of overhead", it.tl))
    ctx.infos[#ctx.infos + 1] = sformat("Bad frame ref %d (bad length)", it.ref)
    local k = ftree:add(F.kind, "bad frame"); k:set_generated()
    return
  end
  local carried = it.tl - 11
  if carried > 0 then ftree:add(F.data, ftvb(foff + 9, carried)) end
  local eit = ftree:add(F["end"], ftvb(foff + len - 2, 2))
  if not it.end_ok then add_expert(ctx, eit, E["bad-end-marker"], "Bad end indicator (expected 0x2f6e)") end
  if carried > 1024 then add_expert(ctx, dlit, E["oversize-frame"], sformat("Frame carries %d data bytes (> 1024 recommended)", carried)) end
  if not KNOWN_TYPES[it.typ] then
    add_expert(ctx, tit, E["unknown-frame-type"], sformat("Unknown payload type 0x%02x", it.typ))
  end
  local err = ERROR_NAMES[it.typ]
  if err or it.typ == 0x20 then link_pairing(ctx, ftree, it, memo_key, false) end
  if err then
    message_withdrawn(ctx, it.ref)
    add_expert(ctx, tit, E["error-frame"], sformat("Error frame 0x%02x: %s (ref %d)", it.typ, err, it.ref))
    local k = ftree:add(F.kind, "error"); k:set_generated()
    ctx.infos[#ctx.infos + 1] = sformat("Error 0x%02x %s ref %d", it.typ, err, it.ref)
    return
  end
  if it.dl < carried then
    add_expert(ctx, dlit, E["bad-length"], sformat("Data length %d is less than the %d bytes this frame carries", it.dl, carried))
  end
  local damage
  if it.bad_start then damage = "bad start indicator"
  elseif not it.end_ok then damage = "bad end indicator"
  elseif it.ver ~= 1 then damage = sformat("unsupported version 0x%02x", it.ver)
  elseif not KNOWN_TYPES[it.typ] then damage = sformat("unknown type 0x%02x", it.typ)
  elseif it.dl < carried then damage = "bad length" end
  if damage then
    -- like the analyzer: a damaged frame is reported, its data not decoded
    local k = ftree:add(F.kind, "bad frame"); k:set_generated()
    -- the peer answers it (usually 0x31): pair it like a request
    if it.typ ~= 0x20 and not ERROR_NAMES[it.typ] then link_pairing(ctx, ftree, it, memo_key, true) end
    ctx.infos[#ctx.infos + 1] = sformat("Bad frame ref %d (%s)", it.ref, damage)
    return
  end
  if it.typ == 0x20 and carried == 0 then
    local k = ftree:add(F.kind, "ack"); k:set_generated()
    ctx.infos[#ctx.infos + 1] = sformat("Ack ref %d", it.ref)
    return
  end
  local body_tvb
  if it.dl > carried then
    -- fragment of a split message (D1)
    local fit = ftree:add(F.is_fragment, true); fit:set_generated()
    local data = ftvb:raw(foff + 9, carried)
    local r = reassemble(pinfo, skey, it, data, memo_key)
    for _, pr in ipairs(r.problems or {}) do add_expert(ctx, fit, E["reassembly-timeout"], pr) end
    if r.state == "complete" then
      body_tvb = ByteArray.new(r.data, true):tvb("Reassembled ECR message")
      local fr = ftree:add(F.fragments, body_tvb())
      fr:set_text(sformat("%d fragments (%d bytes)", #r.frames, #r.data))
      for i, num in ipairs(r.frames) do
        local x = fr:add(F.fragment, num); x:set_generated()
      end
      local c = fr:add(F.fragment_count, #r.frames); c:set_generated()
      local l = fr:add(F.reassembled_len, #r.data); l:set_generated()
    else
      if r.reassembled_in then
        local x = ftree:add(F.reassembled_in, r.reassembled_in); x:set_generated()
      elseif r.state ~= "unknown" and pinfo.visited then
        add_expert(ctx, fit, E["reassembly-timeout"], "Split message never completed")
      end
      if r.state == "overflow" then add_expert(ctx, dlit, E["bad-length"], "Collected data exceeds the data length") end
      ctx.infos[#ctx.infos + 1] = sformat("Fragment ref %d (%d/%d)", it.ref, r.got or carried, it.dl)
      return
    end
  else
    -- a lone frame while fragments of this ref are pending: they are lost
    if not pinfo.visited then
      local key = skey .. ":" .. it.ref
      local p = pending[key]
      if p then
        pending[key] = nil
        reasm[memo_key .. ":lost"] = sformat("incomplete message ref %d discarded (%d of %d bytes)", it.ref, p.got, p.total)
      end
    end
    local lost = reasm[memo_key .. ":lost"]
    if lost then add_expert(ctx, ftree, E["reassembly-timeout"], lost) end
    if carried > 0 then body_tvb = ftvb(foff + 9, carried):tvb() end
  end
  if it.typ == 0x10 then link_pairing(ctx, ftree, it, memo_key, true) end
  if body_tvb then
    local before = #ctx.infos
    ctx.frame_ref, ctx.frame_type = it.ref, it.typ
    dissect_text(ctx, ftree, body_tvb)
    ctx.frame_ref, ctx.frame_type = nil, nil
    if it.typ == 0x20 and #ctx.infos > before then
      ctx.infos[#ctx.infos] = "Ack ref " .. it.ref .. ": " .. ctx.infos[#ctx.infos]
    end
  end
end

local function show_junk(ctx, tree, tvb, off, len)
  local it = tree:add(F.junk, tvb(off, len))
  add_expert(ctx, it, E["garbage-bytes"], sformat("%d bytes outside any frame", len))
  ctx.infos[#ctx.infos + 1] = sformat("%d bytes outside any frame", len)
end

------------------------------------------------------------------------
-- Entry points
------------------------------------------------------------------------
local f_tcp_stream = Field.new("tcp.stream")
local f_http_req = Field.new("http.request")
local f_http_resp = Field.new("http.response")
local f_http_method = Field.new("http.request.method")
local f_http_uri = Field.new("http.request.uri")
local f_http_code = Field.new("http.response.code")
local f_http_phrase = Field.new("http.response.phrase")
local f_iface_name = Field.new("frame.interface_name")

local key_error_reported = nil
local function new_ctx(pinfo, terminal_side)
  local addr, port
  if terminal_side == "dst" then addr, port = tostring(pinfo.dst), pinfo.dst_port
  elseif terminal_side == "src" then addr, port = tostring(pinfo.src), pinfo.src_port end
  local keys = keys_for(addr, port)
  if key_file_error and key_error_reported ~= key_file_error then
    key_error_reported = key_file_error
    pcall(report_failure, "ecr: " .. key_file_error)
  end
  return { pinfo = pinfo, infos = {}, keys = keys }
end

local function finish(ctx, pinfo)
  pinfo.cols.protocol = "ECR"
  if #ctx.infos > 0 then
    -- text from the capture reaches the packet list with control characters escaped
    local text = tconcat(ctx.infos, "; "):gsub("%c", function(c) return sformat("\\x%02x", sbyte(c)) end)
    -- TCP fences the column between PDUs of one packet: continue it then.
    local ok, seen = pcall(function() return pinfo.private.ecr_info end)
    if ok and seen == "1" then
      -- replaces only what follows the fence (e.g. HTTP's own text for a pipelined request)
      pinfo.cols.info:set("; " .. text)
    else
      pinfo.cols.info:set(text)
    end
    pcall(function() pinfo.private.ecr_info = "1" end)
  end
end

local function internal_error(tree, tvb, msg)
  local it = tree:add(ecr, tvb(), "QFPay ECR (internal error)")
  it:add_proto_expert_info(E.internal, "Dissector error: " .. tostring(msg))
end

-- Serial endpoints: the Source and Destination columns name the two ends ("ECR",
-- "POS", plus the port when the capture's interface name says "ecrport<->posport",
-- as the serial tap and the extcap write it). Lua in Wireshark 4.0 has no text
-- address type, so the network addresses that the Flow Graph and Conversations
-- use are the stand-ins 0.0.0.1 (ECR) and 0.0.0.2 (POS).
local ECR_NODE, POS_NODE = Address.ipv4("0.0.0.1"), Address.ipv4("0.0.0.2")
local function serial_names()
  local ok, v = pcall(f_iface_name)
  local name = ok and v and tostring(v.value) or ""
  local a, b = name:match("^(.-)<%->(.+)$")
  -- "/dev/ttyUSB0<->/dev/ttyUSB1" (serial tap, extcap), "usb1:5:ECR <-> usb1:5:POS" (export)
  local function short(x)
    x = x:match("^%s*(.-)%s*$"):gsub("^/dev/", ""):gsub(":ECR$", ""):gsub(":POS$", "")
    return (x:gsub("%c", "?"))
  end
  if a and a ~= "" then return "ECR (" .. short(a) .. ")", "POS (" .. short(b) .. ")" end
  return "ECR", "POS"
end
local function set_serial_endpoints(pinfo, dir)
  if dir ~= 0 and dir ~= 1 then return end
  local e, p = serial_names()
  local ecr_is_src = (dir == 0)
  pinfo.net_src = ecr_is_src and ECR_NODE or POS_NODE
  pinfo.net_dst = ecr_is_src and POS_NODE or ECR_NODE
  pinfo.cols.src = ecr_is_src and e or p
  pinfo.cols.dst = ecr_is_src and p or e
end

-- Line bytes (a serial capture packet or a USB bulk transfer), from offset off of
-- tvb, sent in direction linkdir ("serial:0", "usb:1.5:h"): frames may span packets,
-- so each direction carries its unfinished bytes to its next packet.
local function dissect_line(ctx, tvb, off, pinfo, root, linkdir)
  local len = tvb:len()
  local rec = serial_pkts[pinfo.number]
  if not rec then
    local data = tvb:raw(off, len - off)
    local carry = serial_carry[linkdir] or ""
    local last = serial_last[linkdir]
    if carry ~= "" and last then last.continued_in = pinfo.number end
    if carry ~= "" and sbyte(data, 1) == 0x2f and sbyte(data, 2) == 0x6e then
      -- packet starts on a frame boundary: drop an unfinished carried frame
      local v, t = sbyte(data, 3, 4)
      if v == 1 and KNOWN_TYPES[t] then
        rec = { dropped = #carry }
        carry = ""
      end
    end
    rec = rec or {}
    rec.buf = carry .. data
    rec.carry_len = #carry
    local items, rest = parse_frames(rec.buf, 1, { aligned_start = 1 })
    rec.items, rec.rest = items, rest
    serial_carry[linkdir] = ssub(rec.buf, rest)
    serial_pkts[pinfo.number] = rec
    serial_last[linkdir] = rec
  end
  if rec.dropped then
    add_expert(ctx, root, E.truncated, sformat("%d bytes of an unfinished frame from earlier packets discarded", rec.dropped))
  end
  local xtvb -- tvb for frames starting in earlier packets
  for idx, it in ipairs(rec.items) do
    local ftvb, foff
    if it.off > rec.carry_len then
      ftvb, foff = tvb, it.off - rec.carry_len - 1 + off
    else
      xtvb = xtvb or ByteArray.new(rec.buf, true):tvb("Serial bytes incl. earlier packets")
      ftvb, foff = xtvb, it.off - 1
    end
    if it.kind == "junk" then
      show_junk(ctx, root, ftvb, foff, it.len)
    else
      show_frame(ctx, root, ftvb, foff, it, linkdir, pinfo.number .. ":" .. idx)
    end
  end
  if rec.rest <= #rec.buf then
    local n = #rec.buf - rec.rest + 1
    local shown = math.min(n, len - off)
    local it = root:add(ecr, tvb(len - shown, shown), sformat("Incomplete frame: %d bytes", n))
    if rec.continued_in then
      it:append_text(sformat(", continued in frame %d", rec.continued_in))
      if #ctx.infos == 0 then ctx.infos[1] = "Frame start (continued)" end
    elseif pinfo.visited then
      it:append_text(", never completed")
      add_expert(ctx, it, E.truncated, sformat("Incomplete frame at the end of the capture (%d bytes)", n))
      if #ctx.infos == 0 then ctx.infos[1] = "Truncated frame" end
    else
      if #ctx.infos == 0 then ctx.infos[1] = "Frame start (more bytes expected)" end
    end
  end
end

-- Serial capture (D9): USER0, direction byte then line bytes.
local function dissect_serial(tvb, pinfo, tree)
  local ctx = new_ctx(pinfo)
  local root = tree:add(ecr, tvb(), "QFPay ECR (serial)")
  local len = tvb:len()
  if len < 1 then return 0 end
  local dir = tvb(0, 1):uint()
  root:add(F.direction, tvb(0, 1))
  -- business results travel POS -> ECR as 0x10 frames too (D2): a hint only
  ctx.hint = (dir == 0) and "request" or ((dir == 1) and "response" or nil)
  ctx.conv, ctx.dirkey, ctx.otherdir = "serial", tostring(dir), tostring(1 - dir)
  if dir == 0 or dir == 1 then ctx.from_ecr = (dir == 0) end
  ctx.top_len = len
  set_serial_endpoints(pinfo, dir)
  local fr = root:add(F.framing, "serial"); fr:set_generated()
  root:append_text(", " .. (DIRECTIONS[dir] or "?"))
  dissect_line(ctx, tvb, 1, pinfo, root, "serial:" .. dir)
  finish(ctx, pinfo)
  return len
end

------------------------------------------------------------------------
-- USB-serial adapters (usbmon 189/220, USBPcap 249): the bulk transfers of a
-- device carry the serial line, host-to-device data in the submission and
-- device-to-host data in the completion (Wireshark hands over exactly those).
-- A device is recognised by an ECR frame start in its data (heuristic on
-- usb.bulk) or chosen with Decode As (USB device). Which end is the cash
-- register follows the analyzer's rule: the sender of the first request frame
-- with data is the cash register if it is a business request (func_type), the
-- terminal if it is a business result (respcd), the cash register if it cannot
-- be read; without such a frame, the sender of the first request frame, else
-- the USB host.
------------------------------------------------------------------------
local f_usb_tt = Field.new("usb.transfer_type")
local f_usb_bus = Field.new("usb.bus_id")
local f_usb_dev = Field.new("usb.device_address")
local f_usb_epdir = Field.new("usb.endpoint_address.direction")
local usb_devices, usb_devices_n = {}, 0 -- "bus.dev" -> device record
local usb_claimed = {}                  -- packet number -> claimed by the heuristic
local MAX_USB_DEVICES = 256
usb_reset = function()
  usb_devices, usb_devices_n, usb_claimed = {}, 0, {}
end

local function usb_device_key()
  local b, d = f_usb_bus(), f_usb_dev()
  if not b or not d then return nil end
  return tostring(b.value) .. "." .. tostring(d.value)
end

local function usb_device(key, create)
  local dev = usb_devices[key]
  if not dev and create and usb_devices_n < MAX_USB_DEVICES then
    dev = { key = key }
    usb_devices[key] = dev
    usb_devices_n = usb_devices_n + 1
  end
  return dev
end

local function has_frame_start(s)
  local i = 1
  while true do
    local j = sfind(s, "/n\1", i, true)
    if not j then return false end
    if KNOWN_TYPES[sbyte(s, j + 3) or -1] then return true end
    i = j + 1
  end
end

local function dissect_usb(tvb, pinfo, tree, dev)
  local len = tvb:len()
  local dirf = f_usb_epdir()
  if len == 0 or not dirf then return 0 end
  local from_host = (dirf.value == 0)
  local ctx = new_ctx(pinfo)
  local root = tree:add(ecr, tvb(), "QFPay ECR (USB serial)")
  ctx.conv = "usb:" .. dev.key
  ctx.dirkey, ctx.otherdir = from_host and "h" or "d", from_host and "d" or "h"
  ctx.top_len = len
  if dev.ecr_is_host == nil and pinfo.visited then
    -- nothing decided it during the first pass: the analyzer's fallback
    if dev.first_request_from_host ~= nil then
      dev.ecr_is_host = dev.first_request_from_host
      dev.reason = sformat("no complete request message; the first request frame came %s: its sender is taken as the cash register",
        dev.first_request_from_host and "host to device" or "device to host")
    else
      dev.ecr_is_host = true
      dev.reason = "no request frame seen: the USB host is assumed to be the cash register"
    end
  end
  local function oriented()
    local from_ecr = (from_host == dev.ecr_is_host)
    ctx.from_ecr = from_ecr
    ctx.hint = from_ecr and "request" or "response"
    local d = root:add(F.direction, from_ecr and 0 or 1); d:set_generated()
    local o = root:add(F.usb_oriented, dev.reason or ""); o:set_generated()
    root:append_text(", " .. DIRECTIONS[from_ecr and 0 or 1] .. " (USB " .. (from_host and "host to device" or "device to host") .. ")")
  end
  if dev.ecr_is_host ~= nil then
    oriented()
  else
    ctx.orient = function(c)
      if c.frame_type ~= 0x10 then return end
      local role = c.msg and c.msg.role
      local sender_is_ecr = (role ~= "response")
      dev.ecr_is_host = (sender_is_ecr == from_host)
      local who = from_host and "host to device" or "device to host"
      if role == "request" then
        dev.reason = sformat("the first request frame with data (ref %d, %s) is a business request (func_type): its sender is the cash register", c.frame_ref or 0, who)
      elseif role == "response" then
        dev.reason = sformat("the first request frame with data (ref %d, %s) is a business result (respcd): its sender is the terminal", c.frame_ref or 0, who)
      else
        dev.reason = sformat("the first request frame with data (ref %d, %s) could not be read (encrypted without a key?): its sender is taken as the cash register, which speaks first", c.frame_ref or 0, who)
      end
      c.orient = nil
      c.from_ecr = (from_host == dev.ecr_is_host)
    end
  end
  local fr = root:add(F.framing, "usb"); fr:set_generated()
  local dv = root:add(F.usb_device, dev.key); dv:set_generated()
  dissect_line(ctx, tvb, 0, pinfo, root, "usb:" .. dev.key .. ":" .. ctx.dirkey)
  finish(ctx, pinfo)
  return len
end

-- SET_LINE_CODING (bmRequestType 0x21, bRequest 0x20, 7 data bytes: baud rate,
-- stop bits, parity, data bits) sent to a device that carries ECR frames: spec
-- 10.9 wants 9600 8N1. Wireshark hands usb.control heuristics the setup fields
-- after bmRequestType (7 bytes) and the data. Shown once the whole capture has
-- been read (the device is recognised by its later bulk data).
local f_usb_bmrt = Field.new("usb.bmRequestType")
local STOP_BITS = { [0] = "1", [1] = "1.5", [2] = "2" }
local PARITY = { [0] = "N", [1] = "O", [2] = "E", [3] = "M", [4] = "S" }
local function heur_usb_control(tvb, pinfo, tree)
  if not pinfo.visited or tvb:len() ~= 14 or tvb(0, 1):uint() ~= 0x20 then return false end
  local rt = f_usb_bmrt()
  if not rt or rt.value ~= 0x21 then return false end
  local key = usb_device_key()
  if not key or not usb_devices[key] then return false end
  local baud = tvb(7, 4):le_uint()
  local stop, parity, bits = tvb(11, 1):uint(), tvb(12, 1):uint(), tvb(13, 1):uint()
  local text = sformat("%d %d%s%s", baud, bits, PARITY[parity] or "?", STOP_BITS[stop] or "?")
  local root = tree:add(ecr, tvb(7, 7), "QFPay ECR serial line settings: " .. text)
  local it = root:add(F.line_settings, tvb(7, 7), text)
  if baud ~= 9600 or bits ~= 8 or parity ~= 0 or stop ~= 0 then
    it:add_proto_expert_info(E["line-settings"], sformat("USB device %s set to %s; spec 10.9: 9600 8N1", key, text))
  end
  pinfo.cols.protocol = "ECR"
  pinfo.cols.info = "SET_LINE_CODING " .. text
  return true
end

local function heur_usb(tvb, pinfo, tree)
  if not ecr.prefs.usb_heuristic then return false end
  local claimed = usb_claimed[pinfo.number]
  local key = usb_device_key()
  if not key then return false end
  if claimed == nil then
    if pinfo.visited then return false end
    claimed = usb_device(key, false) ~= nil or (tvb:len() > 0 and has_frame_start(tvb:raw()))
    usb_claimed[pinfo.number] = claimed
  end
  if not claimed then return false end
  local dev = usb_device(key, true)
  if not dev then return false end
  local ok, res = pcall(dissect_usb, tvb, pinfo, tree, dev)
  if not ok then pcall(internal_error, tree, tvb, res) end
  return true
end

local function is_frame_start(s, p)
  local n = #s - p + 1
  if n >= 2 then return ssub(s, p, p + 1) == MARK end
  return ssub(s, p, p) == "/"
end

-- TCP port 9002 (D6)
local function terminal_side(pinfo, port)
  if pinfo.dst_port == port then return "dst" end
  if pinfo.src_port == port then return "src" end
  return nil
end

local function dissect_tcp(tvb, pinfo, tree)
  local ctx = new_ctx(pinfo, terminal_side(pinfo, ecr.prefs.tcp_port))
  if pinfo.dst_port == ecr.prefs.tcp_port then ctx.hint = "request"
  elseif pinfo.src_port == ecr.prefs.tcp_port then ctx.hint = "response" end
  local s = tvb:raw()
  local n = #s
  local root = tree:add(ecr, tvb(), "QFPay ECR (TCP)")
  local st = f_tcp_stream()
  local skey = "tcp:" .. tostring(st and st.value or "?") .. ":" .. tostring(pinfo.src_port)
  ctx.conv = "tcp:" .. tostring(st and st.value or "?")
  ctx.dirkey, ctx.otherdir = tostring(pinfo.src_port), tostring(pinfo.dst_port)
  ctx.top_len = n
  if pinfo.dst_port == ecr.prefs.tcp_port then ctx.from_ecr = true
  elseif pinfo.src_port == ecr.prefs.tcp_port then ctx.from_ecr = false end
  local p = 1
  local pdu = 0
  if not pinfo.visited and stream_mode[skey] == nil then
    local first = sfind(s, "%S")
    if first then stream_mode[skey] = is_frame_start(s, first) and "frames" or "text" end
  end
  local frames_mode = stream_mode[skey] == "frames"
  while p <= n do
    local c = ssub(s, p, p)
    if frames_mode and not is_frame_start(s, p) then
      -- a frame stream: anything else is junk up to the next plausible frame
      local j = find_candidate(s, p + 1) or (n + 1)
      pdu = pdu + 1
      show_junk(ctx, root, tvb, p - 1, j - p)
      p = j
    elseif c:match("%s") then
      local _, e = sfind(s, "^%s+", p)
      p = e + 1
    elseif is_frame_start(s, p) then
      local items, rest, need = parse_frames(s, p, { aligned_start = p })
      -- only consume whole frames; stop at the first non-frame item
      local consumed = p
      for _, it in ipairs(items) do
        if it.kind ~= "frame" then break end
        pdu = pdu + 1
        local fr = root:add(F.framing, "frames"); fr:set_generated()
        show_frame(ctx, root, tvb, it.off - 1, it, skey, pinfo.number .. ":" .. tostring(tvb:len()) .. ":" .. it.off)
        consumed = it.off + it.len
      end
      if consumed == p then
        if rest == p and need then
          pinfo.desegment_offset = p - 1
          pinfo.desegment_len = need
          finish(ctx, pinfo)
          return n
        end
        -- junk starting with the marker
        local it = items[1]
        show_junk(ctx, root, tvb, p - 1, it and it.len or (n - p + 1))
        consumed = p + (it and it.len or (n - p + 1))
      end
      p = consumed
    else
      local e, err, framing
      if c == "{" or c == "[" or c == '"' then
        e, err = json_value_end(s, p)
        framing = (c == '"') and "json-string" or "json"
      else
        -- Base64 text up to a newline
        local nl = sfind(s, "\n", p, true)
        framing = "base64-line"
        if nl then
          e = nl - 1
        else
          local rest = ssub(s, p)
          if rest:match("^[A-Za-z0-9+/=\r]+$") then
            local plain = #ctx.keys > 0 and decrypt_b64(rest, ctx.keys)
            if plain or (#ctx.keys == 0 and #rest % 4 == 0) then
              e = n; framing = "base64"
            else
              err = JSON_EOF
            end
          else
            e = n; framing = "unknown"
          end
        end
      end
      if not e then
        if err == JSON_EOF then
          pinfo.desegment_offset = p - 1
          pinfo.desegment_len = DESEGMENT_ONE_MORE_SEGMENT
          finish(ctx, pinfo)
          return n
        end
        -- unparseable: take up to the next newline
        local nl = sfind(s, "\n", p, true)
        e = nl and (nl - 1) or n
      end
      pdu = pdu + 1
      local mtree = root:add(ecr, tvb(p - 1, e - p + 1), "Message")
      mtree:set_text(sformat("Message (%d bytes)", e - p + 1))
      local fr = mtree:add(F.framing, framing); fr:set_generated()
      dissect_text(ctx, mtree, tvb(p - 1, e - p + 1):tvb())
      p = e + 1
    end
  end
  finish(ctx, pinfo)
  return n
end

local HTTP_PATHS = {
  [1001] = "/api/pos/trade", [1002] = "/api/pos/cancel", [3001] = "/api/pos/print_receipt",
  [3002] = "/api/pos/transaction_info", [4001] = "/api/pos/query_transaction", [5001] = "/api/pos/cancel_request",
}
local function last_value(field)
  local all = { field() }
  local v = all[#all]
  return v and tostring(v.value) or nil
end

local function dissect_http_body(tvb, pinfo, tree)
  local ctx = new_ctx(pinfo, terminal_side(pinfo, ecr.prefs.http_port))
  ctx.hint = f_http_req() and "request" or "response"
  local st = f_tcp_stream()
  if st then ctx.conv = "tcp:" .. tostring(st.value) end
  ctx.from_ecr = (ctx.hint == "request")
  ctx.top_len = tvb:len()
  local root = tree:add(ecr, tvb(), "QFPay ECR (HTTP body)")
  local fr = root:add(F.framing, "http"); fr:set_generated()
  dissect_text(ctx, root, tvb)
  -- Info keeps HTTP's request line (method and path) or status before the ECR summary.
  local line
  if ctx.hint == "request" then
    local m, u = last_value(f_http_method), last_value(f_http_uri)
    if m and u then line = m .. " " .. u end
  else
    local c, ph = last_value(f_http_code), last_value(f_http_phrase)
    if c then line = "HTTP " .. c .. ((ph and ph ~= "") and (" " .. ph) or "") end
  end
  if line and #ctx.infos > 0 then ctx.infos[1] = line .. "  " .. ctx.infos[1] end
  if ctx.hint == "request" then
    local method = last_value(f_http_method)
    if method and method ~= "POST" then
      add_expert(ctx, fr, E["http-method"], "ECR request sent with " .. method .. " (the terminal answers 4004)")
    end
    local uri = last_value(f_http_uri)
    local want = HTTP_PATHS[ctx.func_type or -1]
    if uri and want and (uri:match("^[^?]*")) ~= want then
      add_expert(ctx, fr, E["http-path-mismatch"], sformat("func_type %d sent to %s (spec path %s)", ctx.func_type, uri, want))
    end
  end
  finish(ctx, pinfo)
  return tvb:len()
end

local json_dissector = Dissector.get("json")

local function main_dissector(tvb, pinfo, tree)
  local st = f_tcp_stream()
  local tt = (not st) and f_usb_tt()
  if tt then
    -- Decode As "USB device": only the bulk transfers carry the serial line
    if tt.value ~= 3 then return 0 end
    local key = usb_device_key()
    local dev = key and usb_device(key, true)
    if not dev then return 0 end
    return dissect_usb(tvb, pinfo, tree, dev)
  end
  if not st then
    if pinfo.match_uint == wtap.USER0 then
      return dissect_serial(tvb, pinfo, tree)
    end
    -- exported PDU or other direct call: raw frames / messages, no direction byte
    return dissect_tcp(tvb, pinfo, tree)
  end
  local http = f_http_req() or f_http_resp()
  local hp = ecr.prefs.http_port
  local tp = ecr.prefs.tcp_port
  if http then
    if pinfo.src_port ~= hp and pinfo.dst_port ~= hp then
      -- registered for application/json: not our port, hand to JSON
      if pinfo.match_string and json_dissector then
        return json_dissector:call(tvb, pinfo, tree)
      end
      return 0
    end
    return dissect_http_body(tvb, pinfo, tree)
  end
  return dissect_tcp(tvb, pinfo, tree)
end

function ecr.dissector(tvb, pinfo, tree)
  local ok, res = pcall(main_dissector, tvb, pinfo, tree)
  if ok then return res end
  pcall(internal_error, tree, tvb, res)
  pcall(function() pinfo.cols.protocol = "ECR" end)
  return tvb:len()
end

------------------------------------------------------------------------
-- Registration
------------------------------------------------------------------------
local registered = {}

local function register_ports()
  local tcp_table = DissectorTable.get("tcp.port")
  if registered.tcp then tcp_table:remove(registered.tcp, ecr) end
  if registered.http then
    pcall(function() DissectorTable.get("http.port"):remove(registered.http, ecr) end)
  end
  registered.tcp = ecr.prefs.tcp_port
  registered.http = ecr.prefs.http_port
  tcp_table:add(registered.tcp, ecr)
  -- Nothing is bound to the HTTP port: Wireshark's own TCP heuristics find HTTP there,
  -- and TLS (HTTPS, Haojin 4.34.12+) too, which a binding to HTTP would hide.
  -- bodies without a JSON media type on the HTTP port
  pcall(function() DissectorTable.get("http.port"):add(registered.http, ecr) end)
end

function ecr.prefs_changed()
  key_candidates_cache = {}
  reload_keys()
  decrypt_cache, decrypt_cache_n = {}, 0
  register_ports()
end

-- A tracker that sees every packet (adds nothing to the tree): the capture's last
-- time, and TCP connections the terminal closed (FIN) or that were reset while a
-- request was waiting, for no-response versus unanswered-at-end.
local ecr_track = Proto("ecr_track", "QFPay ECR request tracker")
local f_tcp_fin = Field.new("tcp.flags.fin")
local f_tcp_rst = Field.new("tcp.flags.reset")
local f_tcp_srcport = Field.new("tcp.srcport")
function ecr_track.dissector(tvb, pinfo, tree)
  if pinfo.visited then return end
  local ts = pinfo.abs_ts
  if ts > capture_last_ts then capture_last_ts = ts end
  if next(msg_queue) == nil then return end
  local st = f_tcp_stream()
  if not st then return end
  local conv = "tcp:" .. tostring(st.value)
  local q = msg_queue[conv]
  if not q or #q == 0 then return end
  local rst, fin, sp = f_tcp_rst(), f_tcp_fin(), f_tcp_srcport()
  local from_terminal = sp and (sp.value == ecr.prefs.http_port or sp.value == ecr.prefs.tcp_port)
  if rst and rst.value then
    conv_closed[conv] = { ts = ts, reason = "RST" }
  elseif fin and fin.value and from_terminal then
    conv_closed[conv] = { ts = ts, reason = "FIN from the terminal" }
  end
end
register_postdissector(ecr_track)

register_ports()
-- application/json bodies: the media type table wins over http.port, so we
-- take application/json and hand bodies on other ports back to the JSON dissector.
DissectorTable.get("media_type"):add("application/json", ecr)
DissectorTable.get("wtap_encap"):add(wtap.USER0, ecr)
ecr:register_heuristic("usb.bulk", heur_usb)
ecr:register_heuristic("usb.control", heur_usb_control)
pcall(function() DissectorTable.get("usb.device"):add_for_decode_as(ecr) end)

-- Internals for dissector/test/selftest.lua
if os.getenv("ECR_LUA_SELFTEST") then
  rawset(_G, "ECR_INTERNALS", {
    md5_hex = md5_hex, aes_cbc_decrypt_lua = aes_cbc_decrypt_lua, pkcs7_strip = pkcs7_strip,
    b64_decode = b64_decode, decrypt_b64 = decrypt_b64, json_parse = json_parse,
    format_content = format_content, verify_object_digest = verify_object_digest, verify_digest = verify_digest,
    codes = CODES, codes_elsewhere = CODES_ELSEWHERE,
    parse_frames = parse_frames, backend = function() return crypto_backend end,
  })
end
