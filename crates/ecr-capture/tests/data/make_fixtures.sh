#!/bin/sh
# Regenerates the real-traffic fixtures in this directory (needs root for capture,
# tcpdump, dumpcap, editcap, python3). The tests only read the committed files.
#
# Traffic: a small HTTP/1.1 keep-alive server on 127.0.0.1:9001 (make_fixtures_http.py)
# and a client that sends two pipelined POSTs in one write, then one POST dribbled
# out in 7-byte writes with TCP_NODELAY, then closes. Responses: Content-Length,
# chunked, and Content-Length again.
#
# Files:
#   lo-http.pcap          tcpdump -i lo              (Ethernet, microseconds)
#   any-sll2-http.pcap    tcpdump -i any -y LINUX_SLL2
#   lo-http.pcapng        dumpcap -i lo              (pcapng, EPB with if_tsresol)
#   lo-http-ns.pcap       editcap -F nsecpcap lo-http.pcap
#   lo-http.pcapng.gz     gzip -9n lo-http.pcapng
set -eu
cd "$(dirname "$0")"
PY=make_fixtures_http.py
python3 "$PY" server & SRV=$!
tcpdump -i lo -U -s 0 -w lo-http.pcap 'tcp port 9001' 2>/dev/null & T1=$!
tcpdump -i any -y LINUX_SLL2 -U -s 0 -w any-sll2-http.pcap 'tcp port 9001' 2>/dev/null & T2=$!
dumpcap -q -i lo -f 'tcp port 9001' -w lo-http.pcapng 2>/dev/null & T3=$!
sleep 2
python3 "$PY" client
sleep 1
kill -INT "$T1" "$T2" "$T3"
kill "$SRV" 2>/dev/null || true
wait "$T1" "$T2" "$T3" 2>/dev/null || true
editcap -F nsecpcap lo-http.pcap lo-http-ns.pcap
gzip -9nc lo-http.pcapng > lo-http.pcapng.gz
ls -l lo-http.pcap any-sll2-http.pcap lo-http.pcapng lo-http-ns.pcap lo-http.pcapng.gz
chmod 644 lo-http.pcap any-sll2-http.pcap lo-http.pcapng lo-http-ns.pcap lo-http.pcapng.gz
