-- Self-test of the pure-Lua primitives in ecr.lua, run inside tshark:
--   ECR_LUA_SELFTEST=1 tshark -X lua_script:dissector/ecr.lua \
--       -X lua_script:dissector/test/selftest.lua -r any.pcap -c 1 -q
-- Prints "SELFTEST PASS n" or "SELFTEST FAIL ..." lines.
local I = rawget(_G, "ECR_INTERNALS")
if not I then print("SELFTEST FAIL internals not exported (set ECR_LUA_SELFTEST=1)"); return end
local fails, n = 0, 0
local function check(name, got, want)
  n = n + 1
  if got ~= want then
    fails = fails + 1
    print("SELFTEST FAIL " .. name .. ": got " .. tostring(got) .. " want " .. tostring(want))
  end
end
local K = "f46b1f08bec1f39104792cc79ec9aacd"
check("md5 empty", I.md5_hex(""), "d41d8cd98f00b204e9800998ecf8427e")
check("md5 abc", I.md5_hex("abc"), "900150983cd24fb0d6963f7d28e17f72")
check("md5 long", I.md5_hex(string.rep("a", 1000)), "cabe45dcc9ae5b66ba86600cca6b8ba8")
check("md5 4001", I.md5_hex("{func_type=4001,orderId='12345678'}" .. K), "99ce8bf9c7304ac964522d10f51660b4")
check("md5 5001", I.md5_hex("{func_type=5001}" .. K), "77760cafee81dc33c720c90b75787b5f")
-- FIPS-197 appendix C vectors (decrypt direction), CBC with zero IV = ECB for one block
local function hx(h) return (h:gsub("..", function(x) return string.char(tonumber(x, 16)) end)) end
local function tohex(s) return (s:gsub(".", function(c) return string.format("%02x", c:byte()) end)) end
local zero = string.rep("\0", 16)
check("aes128", tohex(I.aes_cbc_decrypt_lua(hx("000102030405060708090a0b0c0d0e0f"), zero, hx("69c4e0d86a7b0430d8cdb78070b4c55a"))), "00112233445566778899aabbccddeeff")
check("aes192", tohex(I.aes_cbc_decrypt_lua(hx("000102030405060708090a0b0c0d0e0f1011121314151617"), zero, hx("dda97ca4864cdfe06eaf70a0ec0d7191"))), "00112233445566778899aabbccddeeff")
check("aes256", tohex(I.aes_cbc_decrypt_lua(hx("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"), zero, hx("8ea2b7ca516745bfeafc49904b496089"))), "00112233445566778899aabbccddeeff")
local p, interp = I.decrypt_b64("XczeNuwMCct+IaXZ00lv7Pern+ttWiSyG+Y62QH+wXr471L2opZR5JPeQPXADN/Xc1s+VL82RqBp0KFPo5Mm6KUFau0S1WRPC2YN4s6WpiFjwrbGPq3JPZ2OYXTGZHAb", K)
check("D3 aes256 vector", p, "{content:{func_type=4001,orderId='12345678'}, digest:'99CE8BF9C7304AC964522D10F51660B4'}")
check("D3 aes256 interp", interp, "text (AES-256)")
p, interp = I.decrypt_b64("lLrK/0SkJk9Yj8i7zPWfjh55pI6yoxnVhoKiybz6TtHDOAnwVZv9dDr+r/54ombsivgoiUVQ9c0jHxQXSddrd5KGwKLOoPT3IesvXKSHtXs=", "my_qfpay_pos_key")
check("D3 aes128 vector", p, "{content:{func_type=5001}, digest:'5511FE1F062D5DE5AADF6D076F34B8D2'}")
local wrong = I.decrypt_b64("lLrK/0SkJk9Yj8i7zPWfjh55pI6yoxnVhoKiybz6TtHDOAnwVZv9dDr+r/54ombsivgoiUVQ9c0jHxQXSddrd5KGwKLOoPT3IesvXKSHtXs=", "my_qfpay_pos_kez")
check("wrong key fails", wrong, nil)
local obj = I.json_parse("{content:{amt=10.1,channel='card_payment',func_type=1001,out_trade_no='456799999999'}, digest:'38C9C5FB49F7B813086BABEC07914497'}")
check("lenient parse", obj and obj.t, "obj")
check("format_content", I.format_content(obj.vals.content), "{amt=10.1,channel='card_payment',func_type=1001,out_trade_no='456799999999'}")
check("digest ok", (I.verify_object_digest(obj.vals.content, "38C9C5FB49F7B813086BABEC07914497", "a1b2c3d4e5f6a7b8")), "ok")
check("digest mismatch", (I.verify_object_digest(obj.vals.content, "94653711566c4cd076ecd958f4dce23a", "a1b2c3d4e5f6a7b8")), "mismatch")
local o2 = I.json_parse('{"amt":10.1,"channel":"card_payment","func_type":1001,"out_trade_no":"456799999999"}')
local st, _, variant = I.verify_object_digest(o2, "f9c08aa7a68521b7c7a8f55587cea692", "a1b2c3d4e5f6a7b8")
check("digest variant 10.10", st .. "/" .. tostring(variant), "mismatch/amount-two-decimals")
local o3 = I.json_parse('{"amt":10.10,"channel":"card_payment","func_type":1001,"out_trade_no":"456799999999"}')
st, _, variant = I.verify_object_digest(o3, "38c9c5fb49f7b813086babec07914497", "a1b2c3d4e5f6a7b8")
check("digest variant shortest", st .. "/" .. tostring(variant), "mismatch/number-shortest-form")
-- A decryption counts only when it yields a JSON object (issue 12 item 11): this
-- ciphertext (openssl enc -aes-128-cbc, key a1b2c3d4e5f6a7b8, IV qfpay202306_hjsh)
-- has valid padding but holds plain text.
local nj, why = I.decrypt_b64("592EnhrYeSIzQJYS0i+fqGIVJIZhXQZW46vQmS3RpqI=", "a1b2c3d4e5f6a7b8")
check("valid padding, not JSON: rejected", nj, nil)
check("valid padding, not JSON: reason", why, "padding valid but the text is not a JSON object (wrong POS-KEY?)")
local js, interp2, ki = I.decrypt_b64("4gqVENzWjrA+EnJxKMmjSaK2IlX6ib2VOJUnn81+5dQ=", { "my_qfpay_pos_kez", "a1b2c3d4e5f6a7b8" })
check("second key of a list decrypts", js, '{"respcd":"6000"}')
check("second key index", ki, 2)
-- every signing mistake gets its name (issue 12 item 11)
st, _, variant = I.verify_object_digest(o2, "4c56244027ce9b14d1bcbeeccbd95192", "a1b2c3d4e5f6a7b8")
check("digest variant key not appended", st .. "/" .. tostring(variant), "mismatch/key-not-appended")
st, _, variant = I.verify_object_digest(o2, "1ab4d36ac8c425f881d9a860f11eaf1d", "a1b2c3d4e5f6a7b8")
check("digest variant key prepended", st .. "/" .. tostring(variant), "mismatch/key-prepended")
check("bytewise sort", I.format_content(I.json_parse('{"orderId":"1","func_type":4001,"Zed":1,"a_b":2,"aB":3}')), "{Zed=1,aB=3,a_b=2,func_type=4001,orderId='1'}")
check("empty value", I.format_content(I.json_parse('{"a":"","b":null}')), "{a='',b=''}")
-- the frame parser never throws on garbage
local rnd = 12345
for i = 1, 300 do
  local t = {}
  for j = 1, (i % 40) + 1 do rnd = (rnd * 1103515245 + 12345) % 2147483648; t[j] = string.char(({0x2f, 0x6e, 0x01, 0x10, 0x20, 0x00, 0x0b, rnd % 256})[rnd % 8 + 1]) end
  local ok = pcall(I.parse_frames, table.concat(t), 1, {})
  if not ok then check("parse_frames fuzz " .. i, false, true) end
  local ok2 = pcall(I.json_parse, table.concat(t))
  if not ok2 then check("json fuzz " .. i, false, true) end
end
print(string.format("SELFTEST %s %d checks, %d failed (%s, backend %s)", fails == 0 and "PASS" or "FAIL", n, fails, _VERSION, I.backend()))
