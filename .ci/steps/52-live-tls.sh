#!/usr/bin/env bash
# Live HTTPS end to end (issue 13): tests/live_tls.rs captures on lo (root) while
# `emulate --tls` answers `send`, curl and `openssl s_client` (with a KeyUpdate), and
# checks the decrypted records and tshark's view of the KeyUpdates. The test prints
# SKIP when curl, openssl or tshark is missing, so this step installs them first and
# fails on any SKIP.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
. .ci/lib.sh
install_missing curl:curl openssl:openssl tshark:tshark dpkg:ca-certificates
out=$(ECR_SNIFF_NO_SKIP=1 cargo test -q -j2 --test live_tls -- --nocapture 2>&1) || {
    echo "$out"
    exit 1
}
if grep -q '^SKIP' <<<"$out"; then
    echo "$out" | grep '^SKIP'
    echo "FAIL: the live TLS test was skipped although its tools were installed"
    exit 1
fi
echo "live tls: ok ($(grep -o '[0-9]* passed' <<<"$out" | tail -1))"
