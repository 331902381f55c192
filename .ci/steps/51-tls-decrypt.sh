#!/usr/bin/env bash
# HTTPS decryption (issue 13): the bodies `analyze --tls-keylog` decrypts from the
# captures in captures/tls/ must equal what tshark decrypts with the same key logs,
# and tshark must decrypt the pcapng with embedded secrets (DSB) without a key log.
# Installs tshark when missing. Exits non-zero on failure.
set -euo pipefail
cd "$(dirname "$0")/../.."
export CARGO_TARGET_DIR="${CARGO_TARGET_DIR:-$PWD/target}"
. .ci/lib.sh
install_missing tshark:tshark
ECR_SNIFF_REQUIRE_TSHARK=1 cargo test -q -j2 --test tls decrypted_bodies_equal_tsharks
bodies() {
    tshark -n -r "$1" "${@:2}" -d tcp.port==29001,tls -d tls.port==29001,http \
        -Y 'http && tcp.port==29001' -T fields -e http.file_data 2>/dev/null
}
dsb=$(bodies captures/tls/tls13-aes128-gcm-dsb.pcapng)
file=$(bodies captures/tls/tls13-aes128-gcm.pcap -o tls.keylog_file:captures/tls/tls13-aes128-gcm.keylog)
if [ -z "$dsb" ] || [ "$dsb" != "$file" ]; then
    echo "FAIL tshark does not decrypt captures/tls/tls13-aes128-gcm-dsb.pcapng like the key log"
    exit 1
fi
echo "tls captures: ok ($(ls captures/tls/*.pcap | wc -l) sessions agree with tshark)"
