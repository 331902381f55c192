-- ecr.lua: Wireshark/tshark dissector for QFPay ECR traffic
-- (cash register <-> Smart POS payment terminal).
--
-- Decodes:
--   * TCP port 9002 (preference ecr.tcp_port): 0x2f6e frames or JSON / Base64
--     messages (decisions.md D6), with TCP desegmentation;
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

local ECR_LUA_VERSION = "1.0"

local ecr = Proto("ecr", "QFPay ECR Protocol")

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

-- Decrypt Base64 text with the POS-KEY. Returns plaintext, interp or nil, reason.
local decrypt_cache, decrypt_cache_n = {}, 0
local function decrypt_b64(b64, pos_key)
  if not pos_key or pos_key == "" then return nil, "no POS-KEY configured" end
  local ck = pos_key .. "\0" .. b64
  local hit = decrypt_cache[ck]
  if hit then return hit[1], hit[2] end
  local raw = b64_decode(b64)
  local res, why
  if not raw then
    why = "not valid Base64"
  elseif #raw == 0 or #raw % 16 ~= 0 then
    why = sformat("ciphertext length %d is not a multiple of 16", #raw)
  else
    local cands = key_candidates(pos_key)
    if #cands == 0 then
      why = sformat("POS-KEY has %d characters (need 16, 24 or 32)", #pos_key)
    else
      why = "bad padding (wrong POS-KEY?)"
      for _, cand in ipairs(cands) do
        local ok, p = pcall(aes_cbc_decrypt, cand.key, IV, raw)
        if ok and p then
          local plain = pkcs7_strip(p)
          if plain then res = { plain, cand.interp }; break end
        end
      end
    end
  end
  if not res then res = { nil, why } end
  if decrypt_cache_n > 2000 then decrypt_cache, decrypt_cache_n = {}, 0 end
  decrypt_cache[ck] = res
  decrypt_cache_n = decrypt_cache_n + 1
  return res[1], res[2]
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
local function json_parse(s)
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

-- opts: quote ("'" or '"'), sorted (bool), numfmt (function raw->text or nil)
local format_content
local function format_value(v, opts)
  if v.t == "str" then
    return opts.quote .. v.v .. opts.quote
  elseif v.t == "num" then
    return opts.numfmt and opts.numfmt(v.raw, v.v) or v.raw
  elseif v.t == "null" then
    return "''"
  elseif v.t == "bool" then
    return v.raw
  elseif v.t == "obj" then
    return format_content(v, opts)
  elseif v.t == "arr" then
    local parts = {}
    for _, it in ipairs(v.items) do parts[#parts + 1] = format_value(it, opts) end
    return "[" .. tconcat(parts, ",") .. "]"
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
    parts[#parts + 1] = k .. "=" .. format_value(obj.vals[k], opts)
  end
  return "{" .. tconcat(parts, ",") .. "}"
end

local function shortest_number(raw, v)
  if not v then return raw end
  if v == floor(v) and math.abs(v) < 1e15 then return sformat("%d", v) end
  for d = 1, 17 do
    local t = sformat("%." .. d .. "f", v)
    if tonumber(t) == v then return t end
  end
  return raw
end

-- Number spellings a buggy signer may have used instead of the wire token.
-- accept = true: a receiver that parses numbers into doubles computes the same
-- digest (D4 "try the shortest round-trip form, and say so"); the others are
-- signing mistakes a terminal rejects (vectors.json signing_mistakes).
local NUMBER_VARIANTS = {
  { name = "shortest round-trip form", f = shortest_number, accept = true },
  { name = "two decimals", f = function(raw, v)
      if v and (v ~= floor(v) or raw:find("[.eE]")) then return sformat("%.2f", v) end
      return raw end },
  { name = "float with .0", f = function(raw, v)
      if v and v == floor(v) and math.abs(v) < 1e15 then return sformat("%d.0", v) end
      return shortest_number(raw, v) end },
}

local function has_number(obj)
  for _, k in ipairs(obj.keys) do
    local v = obj.vals[k]
    if v.t == "num" then return true end
    if v.t == "obj" and has_number(v) then return true end
  end
  return false
end

-- Verify a digest over a content object. Returns status, computed, variant, hint, format_text
local function verify_object_digest(obj, digest, pos_key)
  local fc = format_content(obj)
  if not pos_key or pos_key == "" then return "unverified", nil, nil, nil, fc end
  local computed = md5_hex(fc .. pos_key)
  local d = (digest or ""):lower()
  if computed == d then return "ok", computed, nil, nil, fc end
  if has_number(obj) then
    for _, nv in ipairs(NUMBER_VARIANTS) do
      local alt = format_content(obj, { quote = "'", sorted = true, numfmt = nv.f })
      if alt ~= fc and md5_hex(alt .. pos_key) == d then
        if nv.accept then
          return "ok", computed, "numbers as " .. nv.name,
            "digest matches only with numbers in their " .. nv.name .. ", not as sent: signing bug in the sender", alt
        end
        return "mismatch", computed, "numbers as " .. nv.name,
          "digest matches if the sender made this mistake: amount reformatted (numbers as " .. nv.name .. ")", alt
      end
    end
  end
  local mistakes = {
    { "double quotes instead of single", format_content(obj, { quote = '"', sorted = true }) .. pos_key },
    { "keys not sorted", format_content(obj, { quote = "'", sorted = false }) .. pos_key },
    { "key not appended", fc },
  }
  for _, m in ipairs(mistakes) do
    if md5_hex(m[2]) == d then
      return "mismatch", computed, nil, "digest matches if the sender made this mistake: " .. m[1], fc
    end
  end
  return "mismatch", computed, nil, nil, fc
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
F.framing = ProtoField.string("ecr.framing", "Framing")
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
F.digest_variant = ProtoField.string("ecr.digest.variant", "Digest matched variant")
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
local E = {
  bad_marker = ProtoExpert.new("ecr.bad_marker", "Bad start/end indicator", expert.group.MALFORMED, expert.severity.ERROR),
  bad_length = ProtoExpert.new("ecr.bad_length", "Bad length", expert.group.MALFORMED, expert.severity.ERROR),
  bad_version = ProtoExpert.new("ecr.bad_version", "Unexpected version", expert.group.PROTOCOL, expert.severity.WARN),
  unknown_type = ProtoExpert.new("ecr.unknown_type", "Unknown payload type", expert.group.PROTOCOL, expert.severity.WARN),
  error_frame = ProtoExpert.new("ecr.error_frame", "Error frame", expert.group.RESPONSE_CODE, expert.severity.WARN),
  junk = ProtoExpert.new("ecr.junk_bytes", "Bytes outside any frame", expert.group.MALFORMED, expert.severity.WARN),
  oversize = ProtoExpert.new("ecr.oversize", "Frame carries more than 1024 data bytes", expert.group.PROTOCOL, expert.severity.NOTE),
  reassembly = ProtoExpert.new("ecr.reassembly", "Reassembly problem", expert.group.REASSEMBLE, expert.severity.WARN),
  truncated = ProtoExpert.new("ecr.truncated", "Truncated frame", expert.group.MALFORMED, expert.severity.WARN),
  digest_mismatch = ProtoExpert.new("ecr.digest_mismatch", "Digest mismatch", expert.group.CHECKSUM, expert.severity.ERROR),
  digest_variant = ProtoExpert.new("ecr.digest_variant", "Digest signing bug", expert.group.CHECKSUM, expert.severity.WARN),
  decrypt_failed = ProtoExpert.new("ecr.decrypt_failed", "Decryption failed", expert.group.DECRYPTION, expert.severity.ERROR),
  no_key = ProtoExpert.new("ecr.no_key", "Encrypted, no POS-KEY configured", expert.group.DECRYPTION, expert.severity.NOTE),
  key_hex = ProtoExpert.new("ecr.key_hex", "POS-KEY used as hex-decoded bytes", expert.group.DECRYPTION, expert.severity.NOTE),
  missing_field = ProtoExpert.new("ecr.missing_field", "Missing mandatory field", expert.group.PROTOCOL, expert.severity.WARN),
  bad_ref = ProtoExpert.new("ecr.bad_ref", "Reference number outside 1..127", expert.group.PROTOCOL, expert.severity.WARN),
  unknown_channel = ProtoExpert.new("ecr.unknown_channel", "Unknown channel", expert.group.PROTOCOL, expert.severity.WARN),
  ack_timeout = ProtoExpert.new("ecr.ack_timeout", "Answer later than 1000 ms", expert.group.SEQUENCE, expert.severity.WARN),
  unexpected_ack = ProtoExpert.new("ecr.unexpected_ack", "Answer without a request", expert.group.SEQUENCE, expert.severity.WARN),
  http_method = ProtoExpert.new("ecr.http_method", "ECR request not sent with POST", expert.group.PROTOCOL, expert.severity.WARN),
  http_path = ProtoExpert.new("ecr.http_path", "HTTP path does not match func_type", expert.group.PROTOCOL, expert.severity.NOTE),
  payme_timeout = ProtoExpert.new("ecr.payme_timeout", "PayMe payment_timeout above 120 s", expert.group.PROTOCOL, expert.severity.WARN),
  unknown_func = ProtoExpert.new("ecr.unknown_func_type", "Unknown func_type", expert.group.PROTOCOL, expert.severity.WARN),
  respcd = ProtoExpert.new("ecr.respcd_not_ok", "Response code is not 6000", expert.group.RESPONSE_CODE, expert.severity.WARN),
  parse = ProtoExpert.new("ecr.parse_error", "Cannot parse message", expert.group.MALFORMED, expert.severity.ERROR),
  internal = ProtoExpert.new("ecr.internal_error", "Dissector internal error", expert.group.MALFORMED, expert.severity.ERROR),
}
do
  local list = {}
  for _, e in pairs(E) do list[#list + 1] = e end
  ecr.experts = list
end

------------------------------------------------------------------------
-- Preferences
------------------------------------------------------------------------
ecr.prefs.pos_key = Pref.string("POS-KEY", "", "POS-KEY used to decrypt and verify digests (16/24/32 characters; a 32-hex-digit key is also tried hex-decoded). If empty, the ECR_POS_KEY environment variable is used.")
ecr.prefs.tcp_port = Pref.uint("TCP port", 9002, "TCP port of the ECR socket protocol")
ecr.prefs.http_port = Pref.uint("HTTP port", 9001, "TCP port of the ECR HTTP protocol")
ecr.prefs.reasm_timeout = Pref.uint("Reassembly timeout (ms)", 500, "Maximum gap between fragments of a split message (D1)")

local function pos_key()
  local k = ecr.prefs.pos_key
  if k == nil or k == "" then k = os.getenv("ECR_POS_KEY") or "" end
  return k
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

local function fmt_amount(v)
  if v == nil then return "?" end
  return sformat("%.2f", v)
end

------------------------------------------------------------------------
-- Message (body) dissection
------------------------------------------------------------------------
local dissect_text -- forward

-- ctx: { pinfo, infos (list), key, srctvb }
local function add_expert(ctx, item, e, text)
  if item then item:add_proto_expert_info(e, text) end
end

local function show_request_content(ctx, tree, tvb, obj)
  local key = ctx.key
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
        if not FUNC_TYPES[ft] then add_expert(ctx, it, E.unknown_func, "Unknown func_type " .. tostring(txt)) end
      else
        local it = add_item(ctree, F.param, rng, "func_type=" .. tostring(txt))
        add_expert(ctx, it, E.unknown_func, "func_type is not a number: " .. tostring(txt))
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
        add_expert(ctx, it, E.unknown_channel, "Unknown channel " .. tostring(txt))
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
    add_expert(ctx, ctree, E.payme_timeout, sformat("PayMe supports payment_timeout up to 120 s, got %s", node_text(obj.vals.payment_timeout)))
  end
  ctx.func_type = ft
  -- mandatory fields
  if ft_node == nil then
    add_expert(ctx, ctree, E.missing_field, "Missing mandatory field func_type")
  end
  local req = MANDATORY[ft or -1]
  if req then
    for _, alt in ipairs(req) do
      local found = false
      for name in alt:gmatch("[^|]+") do
        if obj.vals[name] ~= nil then found = true end
      end
      if not found then
        add_expert(ctx, ctree, E.missing_field, "Missing mandatory field " .. alt:gsub("|", " or "))
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
    add_expert(ctx, dit, E.missing_field, "Missing digest")
  end
  local sit = tree:add(F.digest_status, status)
  sit:set_generated()
  if fc then local it = tree:add(F.format_content, fc); it:set_generated() end
  if computed then local it = tree:add(F.digest_computed, computed); it:set_generated() end
  if variant then local it = tree:add(F.digest_variant, variant); it:set_generated() end
  if status == "mismatch" then
    add_expert(ctx, sit, E.digest_mismatch, "Digest mismatch: got " .. tostring(dtxt) .. ", expected " .. tostring(computed))
  end
  if hint then
    add_expert(ctx, sit, E.digest_variant, hint)
  end
  ctx.digest_status = status
end

local function new_text_tvb(text, name)
  return ByteArray.new(text, true):tvb(name)
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
  local cit = add_item(rtree, F.respcd, node_range(tvb, obj.vals.respcd), respcd)
  local meaning = RESPCD[respcd]
  if meaning then
    cit:append_text(" (" .. meaning .. ")")
    local m = rtree:add(F.respcd_meaning, meaning); m:set_generated()
  end
  if respcd ~= "6000" then
    add_expert(ctx, cit, E.respcd, "Response code " .. respcd .. (meaning and (" (" .. meaning .. ")") or ""))
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
        local plain, why = decrypt_b64(dtext, ctx.key)
        if plain then
          dtvb = new_text_tvb(plain, "Decrypted business data")
          local p2 = json_parse(plain)
          if p2 and p2.t == "obj" then dobj = p2 end
          show_key_interp(ctx, rtree, why)
        else
          local it = rtree:add(F.resp_data, "(encrypted)")
          add_expert(ctx, it, (why == "no POS-KEY configured") and E.no_key or E.decrypt_failed, "Business data: " .. why)
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
  local key = ctx.key
  local info
  if cnode == nil then
    add_expert(ctx, rtree, E.missing_field, "Missing mandatory field content")
    info = "Request (no content)"
  elseif cnode.t == "obj" then
    local _, inf = show_request_content(ctx, rtree, tvb, cnode)
    info = inf
    local st, comp, var, hint, fc = verify_object_digest(cnode, dnode and node_text(dnode), key)
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
      local st, comp, var, hint, fc = verify_object_digest(inner, dnode and node_text(dnode), key)
      show_digest(ctx, rtree, tvb, dnode, st, comp, var, hint, fc)
    else
      -- content-encrypted: digest = md5(Base64 text + key)
      local plain, why = decrypt_b64(ctext, key)
      local status, computed = "unverified", nil
      if key ~= "" then
        computed = md5_hex(ctext .. key)
        status = (computed == (node_text(dnode) or ""):lower()) and "ok" or "mismatch"
      end
      local hint
      if plain then
        show_key_interp(ctx, rtree, why)
        local ptvb = new_text_tvb(plain, "Decrypted content")
        local it = rtree:add(F.decrypted, ptvb(), plain); it:set_generated()
        local pobj = json_parse(plain)
        if pobj and pobj.t == "obj" then
          local _, inf = show_request_content(ctx, rtree, ptvb, pobj)
          info = inf
          if status == "mismatch" and md5_hex(format_content(pobj) .. key) == (node_text(dnode) or ""):lower() then
            hint = "digest matches if the sender made this mistake: digest over the plaintext content instead of the Base64 text"
          end
        else
          add_expert(ctx, it, E.parse, "Decrypted content is not JSON")
          info = "Request (content not JSON)"
        end
      else
        local it = rtree:add(F.content, "(encrypted)")
        add_expert(ctx, it, (why == "no POS-KEY configured") and E.no_key or E.decrypt_failed, "Content: " .. why)
        info = "Request (encrypted)"
      end
      show_digest(ctx, rtree, tvb, dnode, status, computed, nil, hint, nil)
    end
  else
    add_expert(ctx, rtree, E.parse, "content is neither an object nor a string")
    info = "Request (bad content)"
  end
  ctx.dialect = dialect
  ctx.infos[#ctx.infos + 1] = info
  return rtree
end

-- Decode a message text (a complete HTTP body, TCP message or frame data).
-- tvb: the text's tvb. hint: "request"/"response"/nil.
dissect_text = function(ctx, tree, tvb)
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
    local it = tree:add(F.kind, "unknown JSON")
    add_expert(ctx, it, E.parse, "JSON object is neither a request (content/digest) nor a response (respcd)")
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
    local it = tree:add(F.kind, "unparsed")
    add_expert(ctx, it, E.parse, "Not JSON and not Base64" .. ((node == nil) and "" or ""))
    ctx.infos[#ctx.infos + 1] = "Unparsed data"
    return
  end
  local plain, why = decrypt_b64(b64, ctx.key)
  if not plain then
    local it
    if ctx.hint == "request" then
      -- a request body that is only Base64 can only be envelope-encrypted (D4)
      it = tree:add(F.kind, "request"); it:set_generated()
      local d = tree:add(F.dialect, "envelope-encrypted"); d:set_generated()
    elseif ctx.hint == "response" then
      it = tree:add(F.kind, "response"); it:set_generated()
      local d = tree:add(F.dialect, "encrypted"); d:set_generated()
    else
      it = tree:add(F.kind, "encrypted")
    end
    local fit = tree:add(F.envelope_form, form); fit:set_generated()
    add_expert(ctx, it, (why == "no POS-KEY configured") and E.no_key or E.decrypt_failed, "Encrypted message: " .. why)
    ctx.infos[#ctx.infos + 1] = "Encrypted message (" .. why .. ")"
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
    show_request(ctx, dtree, ptvb, pnode, "envelope-encrypted", form)
    return
  end
  add_expert(ctx, it, E.parse, "Decrypted text is not a JSON object: " .. tostring(perr))
  ctx.infos[#ctx.infos + 1] = "Decrypted, unparsed"
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

local outstanding = {} -- conversation .. ":" .. direction .. ":" .. ref -> { frame, ts, rec }
local pairing = {}     -- memo key -> { req = frame, dt = s } | { unexpected = true } | request record

function ecr.init()
  outstanding, pairing = {}, {}
  pending, reasm, serial_carry, serial_pkts, serial_last = {}, {}, {}, {}, {}
  stream_mode = {}
  decrypt_cache, decrypt_cache_n = {}, 0
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
      r = { kind = "request" }
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
    if r.ans then local x = ftree:add(F.ack_in, r.ans); x:set_generated() end
  else
    if r.req then
      local x = ftree:add(F.ack_to, r.req); x:set_generated()
      local ms = floor(r.dt * 1000000 + 0.5) / 1000
      local y = ftree:add(F.ack_time, ms); y:set_generated()
      if ms > 1000 then
        add_expert(ctx, y, E.ack_timeout, sformat("Answer after %.0f ms (> 1000 ms) to the request in frame %d", ms, r.req))
      end
    elseif r.unexpected then
      add_expert(ctx, ftree, E.unexpected_ack, sformat("Answer with ref %d matches no outstanding request", it.ref))
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
  if it.bad_start then add_expert(ctx, sit, E.bad_marker, "Bad start indicator (expected 0x2f6e)") end
  local vit = ftree:add(F.version, ftvb(foff + 2, 1))
  if it.ver ~= 1 then add_expert(ctx, vit, E.bad_version, sformat("Version 0x%02x (expected 0x01)", it.ver)) end
  local tit = ftree:add(F.type, ftvb(foff + 3, 1))
  local rit = ftree:add(F.ref, ftvb(foff + 4, 1))
  if it.ref == 0 or it.ref > 0x7f then add_expert(ctx, rit, E.bad_ref, sformat("Reference number %d outside 1..127", it.ref)) end
  local tlit = ftree:add(F.total_len, ftvb(foff + 5, 2))
  local dlit = ftree:add(F.data_len, ftvb(foff + 7, 2))
  local info
  if it.bad_tl then
    add_expert(ctx, tlit, E.bad_length, sformat("Total length %d is less than the 11 bytes of overhead", it.tl))
    ctx.infos[#ctx.infos + 1] = sformat("Bad frame ref %d (bad length)", it.ref)
    local k = ftree:add(F.kind, "bad frame"); k:set_generated()
    return
  end
  local carried = it.tl - 11
  if carried > 0 then ftree:add(F.data, ftvb(foff + 9, carried)) end
  local eit = ftree:add(F["end"], ftvb(foff + len - 2, 2))
  if not it.end_ok then add_expert(ctx, eit, E.bad_marker, "Bad end indicator (expected 0x2f6e)") end
  if carried > 1024 then add_expert(ctx, dlit, E.oversize, sformat("Frame carries %d data bytes (> 1024 recommended)", carried)) end
  if not KNOWN_TYPES[it.typ] then
    add_expert(ctx, tit, E.unknown_type, sformat("Unknown payload type 0x%02x", it.typ))
  end
  local err = ERROR_NAMES[it.typ]
  if err or it.typ == 0x20 then link_pairing(ctx, ftree, it, memo_key, false) end
  if err then
    add_expert(ctx, tit, E.error_frame, sformat("Error frame 0x%02x: %s (ref %d)", it.typ, err, it.ref))
    local k = ftree:add(F.kind, "error"); k:set_generated()
    ctx.infos[#ctx.infos + 1] = sformat("Error 0x%02x %s ref %d", it.typ, err, it.ref)
    return
  end
  if it.dl < carried then
    add_expert(ctx, dlit, E.bad_length, sformat("Data length %d is less than the %d bytes this frame carries", it.dl, carried))
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
    for _, pr in ipairs(r.problems or {}) do add_expert(ctx, fit, E.reassembly, pr) end
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
        add_expert(ctx, fit, E.reassembly, "Split message never completed")
      end
      if r.state == "overflow" then add_expert(ctx, dlit, E.bad_length, "Collected data exceeds the data length") end
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
    if lost then add_expert(ctx, ftree, E.reassembly, lost) end
    if carried > 0 then body_tvb = ftvb(foff + 9, carried):tvb() end
  end
  if it.typ == 0x10 then link_pairing(ctx, ftree, it, memo_key, true) end
  if body_tvb then
    local before = #ctx.infos
    dissect_text(ctx, ftree, body_tvb)
    if it.typ == 0x20 and #ctx.infos > before then
      ctx.infos[#ctx.infos] = "Ack ref " .. it.ref .. ": " .. ctx.infos[#ctx.infos]
    end
  end
end

local function show_junk(ctx, tree, tvb, off, len)
  local it = tree:add(F.junk, tvb(off, len))
  add_expert(ctx, it, E.junk, sformat("%d bytes outside any frame", len))
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

local function new_ctx(pinfo)
  return { pinfo = pinfo, infos = {}, key = pos_key() }
end

local function finish(ctx, pinfo)
  pinfo.cols.protocol = "ECR"
  if #ctx.infos > 0 then
    local text = tconcat(ctx.infos, "; ")
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
  local fr = root:add(F.framing, "serial"); fr:set_generated()
  root:append_text(", " .. (DIRECTIONS[dir] or "?"))
  local rec = serial_pkts[pinfo.number]
  if not rec then
    local data = tvb:raw(1, len - 1)
    local carry = serial_carry[dir] or ""
    local last = serial_last[dir]
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
    local items, rest, need = parse_frames(rec.buf, 1, { aligned_start = 1 })
    rec.items, rec.rest = items, rest
    serial_carry[dir] = ssub(rec.buf, rest)
    serial_pkts[pinfo.number] = rec
    serial_last[dir] = rec
  end
  if rec.dropped then
    add_expert(ctx, root, E.truncated, sformat("%d bytes of an unfinished frame from earlier packets discarded", rec.dropped))
  end
  local xtvb -- tvb for frames starting in earlier packets
  for idx, it in ipairs(rec.items) do
    local ftvb, foff
    if it.off > rec.carry_len then
      ftvb, foff = tvb, it.off - rec.carry_len -- +1 direction byte, -1 for 1-based
    else
      xtvb = xtvb or ByteArray.new(rec.buf, true):tvb("Serial bytes incl. earlier packets")
      ftvb, foff = xtvb, it.off - 1
    end
    if it.kind == "junk" then
      show_junk(ctx, root, ftvb, foff, it.len)
    else
      show_frame(ctx, root, ftvb, foff, it, "serial:" .. dir, pinfo.number .. ":" .. idx)
    end
  end
  if rec.rest <= #rec.buf then
    local n = #rec.buf - rec.rest + 1
    local it = root:add(ecr, tvb(len - math.min(n, len - 1), math.min(n, len - 1)), sformat("Incomplete frame: %d bytes", n))
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
  finish(ctx, pinfo)
  return len
end

local function is_frame_start(s, p)
  local n = #s - p + 1
  if n >= 2 then return ssub(s, p, p + 1) == MARK end
  return ssub(s, p, p) == "/"
end
local stream_mode = {} -- TCP stream+direction -> "frames" once it started with a frame (D6)

-- TCP port 9002 (D6)
local function dissect_tcp(tvb, pinfo, tree)
  local ctx = new_ctx(pinfo)
  if pinfo.dst_port == ecr.prefs.tcp_port then ctx.hint = "request"
  elseif pinfo.src_port == ecr.prefs.tcp_port then ctx.hint = "response" end
  local s = tvb:raw()
  local n = #s
  local root = tree:add(ecr, tvb(), "QFPay ECR (TCP)")
  local st = f_tcp_stream()
  local skey = "tcp:" .. tostring(st and st.value or "?") .. ":" .. tostring(pinfo.src_port)
  ctx.conv = "tcp:" .. tostring(st and st.value or "?")
  ctx.dirkey, ctx.otherdir = tostring(pinfo.src_port), tostring(pinfo.dst_port)
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
            local plain = ctx.key ~= "" and decrypt_b64(rest, ctx.key)
            if plain or (ctx.key == "" and #rest % 4 == 0) then
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
  local ctx = new_ctx(pinfo)
  ctx.hint = f_http_req() and "request" or "response"
  local root = tree:add(ecr, tvb(), "QFPay ECR (HTTP body)")
  local fr = root:add(F.framing, "http"); fr:set_generated()
  dissect_text(ctx, root, tvb)
  if ctx.hint == "request" then
    local method = last_value(f_http_method)
    if method and method ~= "POST" then
      add_expert(ctx, fr, E.http_method, "ECR request sent with " .. method .. " (the terminal answers 4004)")
    end
    local uri = last_value(f_http_uri)
    local want = HTTP_PATHS[ctx.func_type or -1]
    if uri and want and (uri:match("^[^?]*")) ~= want then
      add_expert(ctx, fr, E.http_path, sformat("func_type %d sent to %s (spec path %s)", ctx.func_type, uri, want))
    end
  end
  finish(ctx, pinfo)
  return tvb:len()
end

local json_dissector = Dissector.get("json")

local function main_dissector(tvb, pinfo, tree)
  local st = f_tcp_stream()
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
local http_tcp = Dissector.get("http-over-tcp")
if not http_tcp then http_tcp = Dissector.get("http") end
local registered = {}

local function register_ports()
  local tcp_table = DissectorTable.get("tcp.port")
  if registered.tcp then tcp_table:remove(registered.tcp, ecr) end
  if registered.http then
    pcall(function() tcp_table:remove(registered.http, http_tcp) end)
    pcall(function() DissectorTable.get("http.port"):remove(registered.http, ecr) end)
  end
  registered.tcp = ecr.prefs.tcp_port
  registered.http = ecr.prefs.http_port
  tcp_table:add(registered.tcp, ecr)
  if http_tcp then tcp_table:add(registered.http, http_tcp) end
  -- bodies without a JSON media type on the HTTP port
  pcall(function() DissectorTable.get("http.port"):add(registered.http, ecr) end)
end

function ecr.prefs_changed()
  key_candidates_cache = {}
  decrypt_cache, decrypt_cache_n = {}, 0
  register_ports()
end

register_ports()
-- application/json bodies: the media type table wins over http.port, so we
-- take application/json and hand bodies on other ports back to the JSON dissector.
DissectorTable.get("media_type"):add("application/json", ecr)
DissectorTable.get("wtap_encap"):add(wtap.USER0, ecr)

-- Internals for dissector/test/selftest.lua
if os.getenv("ECR_LUA_SELFTEST") then
  rawset(_G, "ECR_INTERNALS", {
    md5_hex = md5_hex, aes_cbc_decrypt_lua = aes_cbc_decrypt_lua, pkcs7_strip = pkcs7_strip,
    b64_decode = b64_decode, decrypt_b64 = decrypt_b64, json_parse = json_parse,
    format_content = format_content, verify_object_digest = verify_object_digest,
    parse_frames = parse_frames, backend = function() return crypto_backend end,
  })
end
