#!/usr/bin/env bash
# The dissector must also load on Wireshark 4.4-4.6 (Lua 5.4, no bit32). Debian's
# tshark runs Lua 5.2, so run the pure-Lua self-test under a plain Lua 5.4 too.
set -euo pipefail
cd "$(dirname "$0")/../.."
. .ci/lib.sh
install_missing lua5.4:lua5.4
luac5.4 -p dissector/ecr.lua
out=$(ECR_LUA_SELFTEST=1 lua5.4 dissector/test/lua54.lua)
echo "$out"
case "$out" in
    *"SELFTEST PASS"*) ;;
    *) echo "Lua 5.4 self-test failed"; exit 1 ;;
esac
