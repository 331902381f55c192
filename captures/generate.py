#!/usr/bin/env python3
"""Generate the sample ECR captures in this folder from real loopback traffic.

A small Smart POS terminal emulator (HTTP on 127.0.0.1:9001 per D7 / spec section 8,
raw TCP on 127.0.0.1:9002 per D6, 0x2f6e frames per D1/D2) and a cash-register (ECR)
client run as threads in this process. Each scenario is captured with tcpdump (or
dumpcap for the pcapng files) on the loopback interface. Faults that well-behaved
sockets cannot produce (a lost segment, reordering, retransmission, overlap) are made
by post-processing a real capture; see POSTPROCESS notes in the manifest.

Scenarios marked made_by="regenerate.sh" are made by the project's Rust code instead
(captures/regenerate.sh: `ecr-sniff emulate` and `send`, and the damaged_captures
example); only their expectations stay here, for manifest.json and README.md, and this
program skips them. The rest should move there as the Rust tools learn their faults.

Usage (root is needed for tcpdump/dumpcap):
    sudo python3 captures/generate.py              # all scenarios not made by regenerate.sh
    python3 captures/generate.py --list            # names, files, expectations
    sudo python3 captures/generate.py --only NAME[,NAME...]
    python3 captures/generate.py --selftest        # codec against the test vectors (exit 77 = SKIP)
    python3 captures/generate.py --docs            # rewrite manifest.json and README.md only

Only 127.0.0.1 / ::1 are ever used. Every socket has a timeout, every loop is bounded,
tcpdump is stopped in a finally block.
"""
from __future__ import annotations

import argparse
import base64
import gzip
import hashlib
import json
import os
import select
import shutil
import signal
import socket
import ssl
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback

from cryptography.hazmat.primitives import padding
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes

HERE = os.path.dirname(os.path.abspath(__file__))
HOST4 = "127.0.0.1"
HOST6 = "::1"
HTTP_PORT = 9001
TCP_PORT = 9002
OTHER_PORT = 19002
CAPTURE_FILTER = "tcp port 9001 or tcp port 9002"

IV = b"qfpay202306_hjsh"
KEY_DEFAULT = "f46b1f08bec1f39104792cc79ec9aacd"   # spec default, AES-256 as text (D3)
KEY_128 = "a1b2c3d4e5f6a7b8"                        # AES-128 as text
KEY_WRONG = "9d8c7b6a5f4e3d2c1b0a99887766554f"      # a key the analyzer is not given
KEY_DEFAULT_HEX = bytes.fromhex(KEY_DEFAULT)        # D3 alternative: 16 bytes hex-decoded

OUT_TRADE_NO = "456799999999"

# --------------------------------------------------------------------------------------
# Codec: AES, digests, envelopes (D3, D4), responses (D5)
# --------------------------------------------------------------------------------------


def _key_bytes(key) -> bytes:
    return key if isinstance(key, bytes) else key.encode("utf-8")


def aes_encrypt(key, plaintext: bytes) -> str:
    padder = padding.PKCS7(128).padder()
    data = padder.update(plaintext) + padder.finalize()
    enc = Cipher(algorithms.AES(_key_bytes(key)), modes.CBC(IV)).encryptor()
    return base64.b64encode(enc.update(data) + enc.finalize()).decode("ascii")


def aes_decrypt(key, b64) -> bytes | None:
    try:
        raw = base64.b64decode(b64, validate=True)
        if not raw or len(raw) % 16:
            return None
        dec = Cipher(algorithms.AES(_key_bytes(key)), modes.CBC(IV)).decryptor()
        data = dec.update(raw) + dec.finalize()
        unpadder = padding.PKCS7(128).unpadder()
        return unpadder.update(data) + unpadder.finalize()
    except Exception:
        return None


class RawNum(str):
    """A number kept as its token text as it appeared on the wire (D4)."""


def fmt_value(v, quote="'") -> str:
    if v is None or v == "":
        return "''"
    if isinstance(v, RawNum):
        return str(v)
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return json.dumps(v)
    if isinstance(v, str):
        return quote + v + quote
    raise TypeError(v)


def format_content(content: dict, sort=True, quote="'") -> str:
    keys = sorted(content) if sort else list(content)
    return "{" + ",".join(f"{k}={fmt_value(content[k], quote)}" for k in keys) + "}"


def md5hex(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def sign(content: dict, key: str, mistake: str | None = None) -> str:
    """Digest per spec section 4 / D4, optionally with one of the known signing mistakes."""
    if mistake is None:
        return md5hex(format_content(content) + key)
    if mistake == "double-quotes":
        return md5hex(format_content(content, quote='"') + key)
    if mistake == "unsorted-keys":
        return md5hex(format_content(content, sort=False) + key)
    if mistake == "amount-reformatted":
        fc = format_content(content)
        amt = content["amt"]
        return md5hex(fc.replace(f"amt={json.dumps(amt)}", f"amt={amt:.2f}") + key)
    if mistake == "key-not-appended":
        return md5hex(format_content(content))
    if mistake == "other-key":
        return md5hex(format_content(content) + KEY_WRONG)
    raise ValueError(mistake)


def jdump(obj) -> str:
    return json.dumps(obj, separators=(",", ":"), ensure_ascii=False)


def body_plain(content: dict, key: str, mistake=None, content_as_string=False) -> bytes:
    d = sign(content, key, mistake)
    c = jdump(content) if content_as_string else content
    return jdump({"content": c, "digest": d}).encode()


def body_content_encrypted(content: dict, key) -> bytes:
    b64 = aes_encrypt(key, jdump(content).encode())
    kt = key if isinstance(key, str) else key.hex()
    return jdump({"content": b64, "digest": md5hex(b64 + kt)}).encode()


def envelope_plaintext(content: dict, key: str) -> str:
    return "{content:" + format_content(content) + ", digest:'" + sign(content, key).upper() + "'}"


def body_envelope(content: dict, key: str, quoted=True, enc_key=None) -> bytes:
    """D4 dialect 3: the whole body is Base64(AES(lenient envelope)); signed with key,
    encrypted with enc_key (default: the same key)."""
    b64 = aes_encrypt(enc_key if enc_key is not None else key, envelope_plaintext(content, key).encode())
    return (json.dumps(b64) if quoted else b64).encode()


def response_body(respcd: str, respmsg: str, resperr: str, data) -> dict:
    return {"respcd": respcd, "respmsg": respmsg, "resperr": resperr,
            "data": jdump(data) if not isinstance(data, str) else data}


# lenient org.json-style parser for the decrypted envelope (D4)
def parse_lenient(s: str):
    pos = [0]

    def ws():
        while pos[0] < len(s) and s[pos[0]] in " \t\r\n":
            pos[0] += 1

    def string():
        q = s[pos[0]]
        pos[0] += 1
        out = []
        while s[pos[0]] != q:
            if s[pos[0]] == "\\":
                pos[0] += 1
            out.append(s[pos[0]])
            pos[0] += 1
        pos[0] += 1
        return "".join(out)

    def value():
        ws()
        c = s[pos[0]]
        if c == "{":
            return obj()
        if c in "'\"":
            return string()
        start = pos[0]
        while pos[0] < len(s) and s[pos[0]] not in ",}":
            pos[0] += 1
        tok = s[start:pos[0]].strip()
        try:
            float(tok)
            return RawNum(tok)
        except ValueError:
            return None if tok == "null" else tok

    def obj():
        assert s[pos[0]] == "{"
        pos[0] += 1
        out = {}
        for _ in range(1000):
            ws()
            if s[pos[0]] == "}":
                pos[0] += 1
                return out
            if s[pos[0]] in "'\"":
                name = string()
            else:
                start = pos[0]
                while s[pos[0]] not in "=:":
                    pos[0] += 1
                name = s[start:pos[0]].strip()
            ws()
            assert s[pos[0]] in "=:"
            pos[0] += 1
            out[name] = value()
            ws()
            if s[pos[0]] == ",":
                pos[0] += 1
        raise ValueError("object too long")

    ws()
    return obj()


# --------------------------------------------------------------------------------------
# D1 frames
# --------------------------------------------------------------------------------------
START = b"\x2f\x6e"
T_REQ, T_ACK = 0x10, 0x20
ERR_NAMES = {0x30: "unknown", 0x31: "format", 0x32: "validation", 0x33: "decryption",
             0x34: "data segment format", 0x35: "packet concatenation"}
KNOWN_TYPES = {T_REQ, T_ACK} | set(ERR_NAMES)


def frame(ftype: int, ref: int, data: bytes = b"", data_len=None, version=1, end=START,
          total_len=None) -> bytes:
    tl = 11 + len(data) if total_len is None else total_len
    dl = len(data) if data_len is None else data_len
    return START + bytes([version, ftype, ref]) + struct.pack(">HH", tl, dl) + data + end


def message_frames(ftype: int, ref: int, data: bytes, split=1024) -> list[bytes]:
    if split is None or len(data) <= split:
        return [frame(ftype, ref, data)]
    return [frame(ftype, ref, data[i:i + split], data_len=len(data)) for i in range(0, len(data), split)]


class Frame:
    def __init__(self, raw, kind="frame", error=None):
        self.raw, self.kind, self.error = raw, kind, error
        if kind == "frame":
            self.version, self.type, self.ref = raw[2], raw[3], raw[4]
            self.total_len, self.data_len = struct.unpack(">HH", raw[5:9])
            self.data = raw[9:-2]

    def __repr__(self):
        if self.kind != "frame":
            return f"<{self.kind} {len(self.raw)}B>"
        return f"<frame t={self.type:#x} ref={self.ref} tl={self.total_len} dl={self.data_len} err={self.error}>"


# --------------------------------------------------------------------------------------
# socket helpers
# --------------------------------------------------------------------------------------
class Closed(Exception):
    pass


def recv_some(sock, stop: threading.Event | None, deadline: float) -> bytes:
    """Receive at least one byte; b'' on EOF. Raises Closed on stop/deadline."""
    for _ in range(100000):
        if stop is not None and stop.is_set():
            raise Closed("stop")
        if time.monotonic() > deadline:
            raise Closed("deadline")
        try:
            return sock.recv(65536)
        except socket.timeout:
            continue
        except (ConnectionResetError, OSError):
            return b""
    raise Closed("loop bound")


class Reader:
    def __init__(self, sock, stop=None, timeout=15.0):
        self.sock, self.stop, self.buf = sock, stop, b""
        self.timeout = timeout
        sock.settimeout(0.2)

    def fill(self, deadline=None) -> bool:
        d = deadline or time.monotonic() + self.timeout
        chunk = recv_some(self.sock, self.stop, d)
        if not chunk:
            return False
        self.buf += chunk
        return True

    def need(self, n, deadline=None) -> bool:
        while len(self.buf) < n:
            if not self.fill(deadline):
                return False
        return True

    def take(self, n) -> bytes:
        out, self.buf = self.buf[:n], self.buf[n:]
        return out


# ---------------- HTTP/1.1 ----------------
def http_read_message(r: Reader, deadline=None):
    """Returns (start_line, headers(dict lower), body) or None on clean EOF."""
    for _ in range(10000):
        i = r.buf.find(b"\r\n\r\n")
        if i >= 0:
            break
        if not r.fill(deadline):
            if r.buf:
                raise Closed("EOF inside headers")
            return None
    head = r.take(i + 4).decode("latin-1")
    lines = head.split("\r\n")
    headers = {}
    for ln in lines[1:]:
        if ":" in ln:
            k, v = ln.split(":", 1)
            headers[k.strip().lower()] = v.strip()
    if headers.get("transfer-encoding", "").lower() == "chunked":
        body = b""
        for _ in range(10000):
            while b"\r\n" not in r.buf:
                if not r.fill(deadline):
                    raise Closed("EOF in chunk")
            j = r.buf.find(b"\r\n")
            size = int(r.take(j + 2)[:-2].split(b";")[0], 16)
            if not r.need(size + 2, deadline):
                raise Closed("EOF in chunk")
            body += r.take(size + 2)[:-2]
            if size == 0:
                break
        return lines[0], headers, body
    n = int(headers.get("content-length", "0"))
    if not r.need(n, deadline):
        raise Closed("EOF in body")
    return lines[0], headers, r.take(n)


def http_request_bytes(method, path, body: bytes, host="127.0.0.1:9001", close=False) -> bytes:
    h = (f"{method} {path} HTTP/1.1\r\nHost: {host}\r\nUser-Agent: python-requests/2.31.0\r\n"
         f"Accept-Encoding: gzip, deflate\r\nAccept: */*\r\n"
         f"Connection: {'close' if close else 'keep-alive'}\r\n"
         f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n")
    return h.encode() + body


def http_response_bytes(body: bytes, chunked=False, close=False) -> bytes:
    h = "HTTP/1.1 200 OK\r\nContent-Type: application/json; charset=utf-8\r\n"
    h += f"Date: Thu, 03 Jul 2025 06:33:23 GMT\r\nConnection: {'close' if close else 'keep-alive'}\r\n"
    if chunked:
        h += "Transfer-Encoding: chunked\r\n\r\n"
        half = len(body) // 2
        parts = [body[:half], body[half:]]
        return h.encode() + b"".join(b"%x\r\n%s\r\n" % (len(p), p) for p in parts) + b"0\r\n\r\n"
    return (h + f"Content-Length: {len(body)}\r\n\r\n").encode() + body


# --------------------------------------------------------------------------------------
# The terminal (POS) business logic
# --------------------------------------------------------------------------------------
FUNC_PATHS = {1001: "/api/pos/trade", 1002: "/api/pos/cancel", 3001: "/api/pos/print_receipt",
              3002: "/api/pos/transaction_info", 4001: "/api/pos/query_transaction",
              5001: "/api/pos/cancel_request"}
CHANNEL_BUSICD = {"card_payment": "802808", "wx": "800208", "alipay": "800108", "payme": "805808",
                  "union": "800708", "fps": "802001", "octopus": "803708",
                  "unionpay_card": "806708", "amex_card": "806808"}
CARDS = {"card_payment": ("VISA", "476173******0119", "CREDIT"),
         "unionpay_card": ("UNIONPAY", "621226******4423", "DEBIT"),
         "amex_card": ("AMEX", "377935*****1008", "CREDIT")}
MCHNT = "ECR Sniff Demo Store"


class Terminal:
    """Decodes any D4 dialect, checks it like a terminal would, answers D5 plain JSON."""

    def __init__(self, keys, syssn_base: int, overrides=None, encrypt_responses=None, summary_items=3,
                 delays=None):
        self.keys = list(keys)
        self.seq = 0
        self.syssn_base = syssn_base
        self.trades = {}
        self.overrides = overrides or {}        # request index -> dict
        self.encrypt_responses = encrypt_responses or {}  # request index -> "body"|"data"
        self.summary_items = summary_items
        self.delays = delays or {1001: 0.3, 1002: 0.15}
        self.count = 0
        self.lock = threading.Lock()
        self.cancel_event = threading.Event()
        self.log = []

    # time and ids are deterministic per scenario
    def _stamp(self, n):
        t = 14 * 3600 + 30 * 60 + n * 37
        return f"2025-07-03 {t // 3600:02d}:{t // 60 % 60:02d}:{t % 60:02d}"

    def _syssn(self, n):
        return f"2025070315540002{self.syssn_base + n:010d}"

    def next_index(self):
        with self.lock:
            i = self.count
            self.count += 1
            return i

    def decode(self, body: bytes):
        """-> (content or None, dialect, error respcd or None, err text)"""
        text = body.decode("utf-8", "replace").strip()
        obj = None
        try:
            obj = json.loads(text, parse_float=RawNum, parse_int=RawNum)
        except ValueError:
            pass
        if isinstance(obj, dict):
            if "content" not in obj or "digest" not in obj:
                return None, None, "4006", "no content/digest"
            c, dg = obj["content"], str(obj["digest"])
            if isinstance(c, dict):
                return self._check(c, dg, "plain")
            try:
                inner = json.loads(c, parse_float=RawNum, parse_int=RawNum)
                if isinstance(inner, dict):
                    return self._check(inner, dg, "plain")
            except ValueError:
                pass
            for k, kt in self._key_variants():
                pt = aes_decrypt(k, c)
                if pt is not None:
                    content = json.loads(pt, parse_float=RawNum, parse_int=RawNum)
                    if md5hex(c + kt).lower() != dg.lower():
                        return content, "content-encrypted", "4003", "digest mismatch"
                    return content, "content-encrypted", None, None
            return None, "content-encrypted", "5001", "decryption failed"
        b64 = obj if isinstance(obj, str) else text
        for k, kt in self._key_variants():
            pt = aes_decrypt(k, b64)
            if pt is not None:
                env = parse_lenient(pt.decode())
                content = env.get("content") or {}
                if sign(content, kt).lower() != str(env.get("digest", "")).lower():
                    return content, "envelope-encrypted", "4003", "digest mismatch"
                return content, "envelope-encrypted", None, None
        return None, "envelope-encrypted", "5001", "decryption failed"

    def _key_variants(self):
        out = []
        for k in self.keys:
            out.append((k, k))
            if len(k) == 32:
                try:
                    out.append((bytes.fromhex(k), k))
                except ValueError:
                    pass
        return out

    def _check(self, content, digest, dialect):
        for k in self.keys:
            if isinstance(k, str) and sign(content, k).lower() == digest.lower():
                return content, dialect, None, None
        return content, dialect, "4003", "digest mismatch"

    def handle(self, body: bytes, method="POST", path=None, index=None):
        """-> (response dict, content, index)"""
        idx = self.next_index() if index is None else index
        ov = self.overrides.get(idx, {})
        if method != "POST":
            return response_body("4004", "Incorrect Method", "please use POST", {}), None, idx
        content, dialect, err, why = self.decode(body)
        self.log.append((idx, dialect, content, err))
        if err == "5001":
            return response_body("5001", "Decryption Failed", why, {}), content, idx
        if err == "4003":
            return response_body("4003", "Request Denied", "signature error", {}), content, idx
        if err:
            return response_body(err, "Incorrect Parameters", why, {}), content, idx
        try:
            ft = int(content.get("func_type"))
        except (TypeError, ValueError):
            ft = None
        if ft not in FUNC_PATHS:
            return response_body("4006", "Incorrect Parameters", "unsupported func_type", {}), content, idx
        if ft == 1001:
            if "amt" not in content or "channel" not in content:
                return response_body("4006", "Incorrect Parameters", "amt is required", {}), content, idx
            if content["channel"] not in CHANNEL_BUSICD:
                return response_body("4006", "Incorrect Parameters", "unsupported channel", {}), content, idx
        if ft in (1002, 3001) and not content.get("orderId"):
            return response_body("4006", "Incorrect Parameters", "orderId is required", {}), content, idx
        if ov.get("wait_cancel"):
            self.cancel_event.wait(10)
            return response_body("6001", "Request Cancelled", "cancelled by cash register", {}), content, idx
        if "respcd" in ov:
            msg = {"4003": ("Request Denied", "terminal busy"),
                   "4006": ("Incorrect Parameters", "refund amount exceeds refundable amount"),
                   "5001": ("Decryption Failed", "decrypt error"),
                   "6002": ("Request Error", "network error")}[ov["respcd"]]
            return response_body(ov["respcd"], msg[0], msg[1], {}), content, idx
        return getattr(self, f"f{ft}")(content), content, idx

    # ---- business responses
    def f1001(self, c):
        n = self.seq = self.seq + 1
        amt = float(c["amt"])
        cents = str(round(amt * 100))
        ch = c["channel"]
        syssn = self._syssn(n)
        otn = str(c.get("out_trade_no") or f"ECR{self.syssn_base + n:09d}")
        self.trades[syssn] = {"cents": cents, "channel": ch, "out_trade_no": otn, "n": n}
        data = {"batchNo": "250703", "busicd": CHANNEL_BUSICD[ch], "chnlsn": f"20250703{75830316 + n}",
                "clisn": f"{30800 + n:06d}", "mchntnm": MCHNT, "out_trade_no": otn,
                "paydtm": self._stamp(n), "paymentType": "SALES", "respcd": "0000",
                "sysdtm": self._stamp(n), "syssn": syssn, "terminalId": "253SCASG9109",
                "txamt": cents, "txcurrcd": "344", "udid": "A8S0253SCASG9109", "userid": "2602411"}
        if ch in CARDS:
            scheme, cardno, ctype = CARDS[ch]
            data.update({"cardNo": cardno, "cardType": scheme, "cardscheme": scheme, "cardtype": ctype})
            return response_body("6000", "AUTHORISED", "trade success", data)
        return response_body("6000", "SUCCESS", "trade success", data)

    def _find(self, order_id):
        for s, t in self.trades.items():
            if order_id in (s, t["out_trade_no"]):
                return s, t
        return None, None

    def f1002(self, c):
        n = self.seq = self.seq + 1
        orig, t = self._find(str(c["orderId"]))
        if t is None:
            return response_body("4005", "Other Errors", "order not found", {})
        amt = c.get("refund_amount")
        cents = str(round(float(amt) * 100)) if amt not in (None, "") else t["cents"]
        data = {"orig_syssn": orig, "syssn": self._syssn(n), "txamt": cents, "originTxamt": t["cents"],
                "sysdtm": self._stamp(n), "paydtm": self._stamp(n), "busicd": CHANNEL_BUSICD[t["channel"]],
                "txcurrcd": "344", "respcd": "0000"}
        return response_body("6000", "SUCCESS", "refund success", data)

    def f3001(self, c):
        orig, t = self._find(str(c["orderId"]))
        return response_body("6000", "SUCCESS", "print success", {"syssn": orig or str(c["orderId"])})

    def f3002(self, c):
        trades = []
        for i in range(self.summary_items):
            ch = list(CHANNEL_BUSICD)[i % len(CHANNEL_BUSICD)]
            trades.append({"syssn": self._syssn(100 + i), "busicd": CHANNEL_BUSICD[ch], "tradetp": "payment",
                           "txamt": str(1000 + 137 * i), "txcurrcd": "344", "sysdtm": self._stamp(i),
                           "out_trade_no": f"4567999{i:05d}"})
        total = sum(int(t["txamt"]) for t in trades)
        data = {"date": "2025-07-03", "mchntnm": MCHNT, "terminalId": "253SCASG9109",
                "total_count": str(len(trades)), "total_amt": str(total), "txcurrcd": "344",
                "refund_count": "0", "refund_amt": "0", "trades": trades}
        return response_body("6000", "SUCCESS", "summary printed", data)

    def f4001(self, c):
        orig, t = self._find(str(c.get("orderId") or c.get("out_trade_no") or ""))
        if t is None:
            return response_body("4005", "Other Errors", "order not found", {})
        ch = t["channel"]
        scheme, cardno, ctype = CARDS.get(ch, ("", "", ""))
        data = {"server_time": self._stamp(t["n"] + 1), "cancel": "0", "clisn": f"{30800 + t['n']:06d}",
                "opuid": "0000", "syssn": orig, "tradetp": "payment", "sysdtm": self._stamp(t["n"]),
                "txcurrcd": "344", "origssn": "", "opuser": "cashier", "nickname": MCHNT,
                "allow_refund_amt": t["cents"], "desc": "", "txamt": t["cents"], "busicd": CHANNEL_BUSICD[ch],
                "origbusicd": "", "chnlsn": f"20250703{75830316 + t['n']}", "cardscheme": scheme,
                "cardno": cardno, "cardtype": ctype, "batchno": "250703", "refno": f"{518400000000 + t['n']}",
                "respcd": "0000"}
        return response_body("6000", "SUCCESS", "query success", data)

    def f5001(self, c):
        self.cancel_event.set()
        return response_body("6000", "SUCCESS", "cancel success", {})

    def response_bytes(self, resp: dict, idx: int) -> bytes:
        mode = self.encrypt_responses.get(idx)
        key = self.keys[0]
        if mode == "body":
            return aes_encrypt(key, jdump(resp).encode()).encode()
        if mode == "data":
            resp = dict(resp, data=aes_encrypt(key, resp["data"].encode()))
        return jdump(resp).encode()


# --------------------------------------------------------------------------------------
# Servers
# --------------------------------------------------------------------------------------
class Servers:
    def __init__(self, terminal: Terminal, http_port=HTTP_PORT, tcp_port=TCP_PORT, host=HOST4,
                 tls_ctx=None, chunk_ft=(), frame_ops=None):
        self.t = terminal
        self.host = host
        self.ports = [p for p in (http_port, tcp_port) if p]
        self.http_port, self.tcp_port = http_port, tcp_port
        self.tls_ctx = tls_ctx
        self.chunk_ft = set(chunk_ft)
        self.frame_ops = frame_ops or {}
        self.stop_ev = threading.Event()
        self.threads = []
        self.listeners = []
        self.errors = []

    def start(self):
        fam = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        for port in self.ports:
            ls = socket.socket(fam, socket.SOCK_STREAM)
            ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            ls.bind((self.host, port))
            ls.listen(16)
            ls.settimeout(0.2)
            self.listeners.append(ls)
            th = threading.Thread(target=self._accept, args=(ls, port), daemon=True)
            th.start()
            self.threads.append(th)
        return self

    def stop(self):
        self.stop_ev.set()
        self.t.cancel_event.set()
        for th in self.threads:
            th.join(5)
        for ls in self.listeners:
            ls.close()

    def _accept(self, ls, port):
        for _ in range(100000):
            if self.stop_ev.is_set():
                return
            try:
                conn, _ = ls.accept()
            except socket.timeout:
                continue
            except OSError:
                return
            conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            handler = self._http if port == self.http_port else self._tcp
            th = threading.Thread(target=self._guard, args=(handler, conn), daemon=True)
            th.start()
            self.threads.append(th)

    def _guard(self, handler, conn):
        try:
            handler(conn)
        except Closed:
            pass
        except Exception as e:  # noqa
            self.errors.append(repr(e))
            traceback.print_exc()
        finally:
            try:
                conn.close()
            except OSError:
                pass

    # ---------------- HTTP on 9001 ----------------
    def _http(self, conn):
        if self.tls_ctx is not None:
            conn.settimeout(5)
            conn = self.tls_ctx.wrap_socket(conn, server_side=True)
        r = Reader(conn, self.stop_ev, timeout=20)
        for _ in range(100):
            msg = http_read_message(r)
            if msg is None:
                return
            start, headers, body = msg
            method, path, _ = start.split(" ", 2)
            idx = self.t.next_index()
            ov = self.t.overrides.get(idx, {})
            if ov.get("close"):
                time.sleep(ov.get("delay", 0.2))
                conn.shutdown(socket.SHUT_RDWR)
                return
            if ov.get("hang"):
                self.stop_ev.wait(30)
                return
            resp, content, _ = self.t.handle(body, method, path, index=idx)
            ft = None
            try:
                ft = int(content.get("func_type")) if content else None
            except (TypeError, ValueError):
                pass
            time.sleep(ov.get("delay", self.t.delays.get(ft, 0.05)))
            close = headers.get("connection", "").lower() == "close"
            conn.sendall(http_response_bytes(self.t.response_bytes(resp, idx), ft in self.chunk_ft, close))
            if close:
                return

    # ---------------- TCP on 9002 ----------------
    def _tcp(self, conn):
        r = Reader(conn, self.stop_ev, timeout=20)
        if not r.need(3):
            return
        if r.buf[:3] == START + b"\x01":
            return self._frames(conn, r)
        for _ in range(100):
            while r.buf[:1] in (b"\r", b"\n", b" "):
                r.take(1)
            if not r.buf and not r.fill():
                return
            if r.buf[:1] in (b"{", b'"'):  # a complete JSON value
                dec = json.JSONDecoder()
                for _ in range(1000):
                    try:
                        _, end = dec.raw_decode(r.buf.decode("utf-8", "replace"))
                        break
                    except ValueError:
                        if not r.fill():
                            return
                body, nl = r.take(len(r.buf.decode("utf-8", "replace")[:end].encode())), b""
            else:  # Base64 text up to newline or half-close
                eof = False
                while b"\n" not in r.buf and not eof:
                    eof = not r.fill()
                if b"\n" in r.buf:
                    i = r.buf.index(b"\n")
                    body = r.take(i + 1).strip()
                else:
                    body = r.take(len(r.buf)).strip()
                nl = b"\n"
                if eof:
                    resp, _, idx = self.t.handle(body)
                    time.sleep(0.05)
                    conn.sendall(self.t.response_bytes(resp, idx) + nl)
                    return
            resp, content, idx = self.t.handle(body)
            ft = int(content["func_type"]) if content and str(content.get("func_type", "")).isdigit() else None
            time.sleep(self.t.delays.get(ft, 0.05))
            conn.sendall(self.t.response_bytes(resp, idx) + nl)

    def _frames(self, conn, r: Reader):
        pos_ref = 0
        partial = {}
        msg_index = 0
        for _ in range(1000):
            f = read_frame(r)
            if f is None:
                return
            if f.kind == "garbage":
                continue
            if f.error:  # answer malformed frames with a format error (10.4)
                time.sleep(0.01)
                conn.sendall(frame(0x31, f.ref))
                continue
            if f.type != T_REQ:
                continue  # acks from the cash register
            buf = partial.get(f.ref, b"") + f.data
            if len(buf) < f.data_len:
                partial[f.ref] = buf
                continue
            partial.pop(f.ref, None)
            ops = self.frame_ops.get(msg_index, {})
            msg_index += 1
            if ops.get("error_frame"):
                time.sleep(0.02)
                conn.sendall(frame(ops["error_frame"], f.ref))
                continue
            resp, content, idx = self.t.handle(buf)
            ft = int(content["func_type"]) if content and str(content.get("func_type", "")).isdigit() else None
            ack = frame(T_ACK, f.ref)
            pos_ref = pos_ref % 0x7F + 1
            frames = message_frames(T_REQ, pos_ref, self.t.response_bytes(resp, idx),
                                    split=None if ops.get("no_split") else 1024)
            delay = self.t.delays.get(ft, 0.0)
            if ops.get("ack_delay"):
                time.sleep(ops["ack_delay"])
                conn.sendall(ack)
            elif delay == 0.0 or ft in (3001, 4001, 5001):
                time.sleep(0.02)
                ack_sent = False
                if len(frames) == 1:  # ack and result in one segment
                    conn.sendall(ack + frames[0])
                    frames = []
                    ack_sent = True
                if not ack_sent:
                    conn.sendall(ack)
            else:
                time.sleep(0.005)
                conn.sendall(ack)
            time.sleep(delay)
            for i, fr in enumerate(frames):
                if i and ops.get("frag_delay"):
                    time.sleep(ops["frag_delay"])
                elif i:
                    time.sleep(0.01)
                conn.sendall(fr)
            if ops.get("unsolicited_ack"):
                time.sleep(0.3)
                conn.sendall(frame(T_ACK, ops["unsolicited_ack"]))


def read_frame(r: Reader, deadline=None):
    """Parse one frame by its length fields (D1). Returns Frame, a garbage Frame, or None at EOF."""
    if not r.buf and not r.fill(deadline):
        return None
    if r.buf[:1] != b"\x2f" or (len(r.buf) >= 3 and r.buf[:2] != START):
        i = r.buf.find(START + b"\x01", 1)
        for _ in range(100):
            if i >= 0:
                break
            if not r.fill(deadline):
                return Frame(r.take(len(r.buf)), kind="garbage") if r.buf else None
            i = r.buf.find(START + b"\x01", 1)
        return Frame(r.take(i), kind="garbage")
    if not r.need(9, deadline):
        return Frame(r.take(len(r.buf)), kind="garbage") if r.buf else None
    total = struct.unpack(">H", r.buf[5:7])[0]
    if total < 11:
        return Frame(r.take(9) + b"\x00\x00", error="bad-length")
    if not r.need(total, deadline):
        return Frame(r.take(len(r.buf)), kind="garbage")
    f = Frame(r.take(total))
    if f.raw[-2:] != START:
        f.error = "bad-end-marker"
    elif f.version != 1:
        f.error = "unsupported-version"
    elif f.type not in KNOWN_TYPES:
        f.error = "unknown-frame-type"
    elif f.data_len < f.total_len - 11:
        f.error = "bad-length"
    return f


# --------------------------------------------------------------------------------------
# ECR (cash register) clients
# --------------------------------------------------------------------------------------
def connect(port, host=HOST4, timeout=10):
    fam = socket.AF_INET6 if ":" in host else socket.AF_INET
    s = socket.socket(fam, socket.SOCK_STREAM)
    s.settimeout(timeout)
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    s.connect((host, port))
    return s


class HttpClient:
    def __init__(self, host=HOST4, port=HTTP_PORT, sock=None):
        self.host, self.port = host, port
        self.sock = sock or connect(port, host)
        self.r = Reader(self.sock, None, timeout=20)
        self.hosthdr = f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    def request(self, ft_or_path, body, method="POST", close=False, split_body=False):
        path = FUNC_PATHS[ft_or_path] if isinstance(ft_or_path, int) else ft_or_path
        data = http_request_bytes(method, path, body, self.hosthdr, close)
        if split_body:  # headers and body in separate segments
            i = data.index(b"\r\n\r\n") + 4
            self.sock.sendall(data[:i])
            time.sleep(0.03)
            self.sock.sendall(data[i:])
        else:
            self.sock.sendall(data)
        return self.read()

    def read(self):
        msg = http_read_message(self.r)
        if msg is None:
            return None
        return json_or_text(msg[2])

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def json_or_text(b: bytes):
    try:
        return json.loads(b)
    except ValueError:
        return b.decode("latin-1")


def http_once(ft, body, **kw):
    c = HttpClient()
    try:
        return c.request(ft, body, close=True, **kw)
    finally:
        c.close()


def resp_data(resp) -> dict:
    try:
        return json.loads(resp["data"])
    except Exception:
        return {}


class FrameClient:
    def __init__(self, port=TCP_PORT, host=HOST4):
        self.sock = connect(port, host)
        self.r = Reader(self.sock, None, timeout=10)
        self.ref = 0
        self.pending = b""   # an ack held back to share a segment with the next request

    def next_ref(self):
        self.ref = self.ref % 0x7F + 1
        return self.ref

    def send(self, data: bytes):
        self.sock.sendall(self.pending + data)
        self.pending = b""

    def read_answer(self, ref):
        f = read_frame(self.r)
        assert f is not None and f.kind == "frame" and f.ref == ref, f
        return f

    def read_message(self):
        buf, ref = b"", None
        for _ in range(100):
            f = read_frame(self.r)
            assert f is not None and f.kind == "frame" and f.type == T_REQ, f
            buf += f.data
            ref = f.ref
            if len(buf) >= f.data_len:
                return buf, ref
        raise AssertionError("too many fragments")

    def transact(self, body: bytes, hold_ack=False, ref=None, prefix=b""):
        ref = self.next_ref() if ref is None else ref
        self.send(prefix + b"".join(message_frames(T_REQ, ref, body)))
        ans = self.read_answer(ref)
        if ans.type != T_ACK:
            return ans
        result, rref = self.read_message()
        ack = frame(T_ACK, rref)
        time.sleep(0.01)
        if hold_ack:
            self.pending = ack
        else:
            self.sock.sendall(ack)
        return json_or_text(result)

    def transact_many(self, bodies, hold_last_ack=False):
        """Several request messages in one TCP segment; the POS answers each in turn."""
        refs = [self.next_ref() for _ in bodies]
        self.send(b"".join(b"".join(message_frames(T_REQ, r, b)) for r, b in zip(refs, bodies)))
        out = []
        for i, r in enumerate(refs):
            self.read_answer(r)
            result, rref = self.read_message()
            time.sleep(0.01)
            if hold_last_ack and i == len(refs) - 1:
                self.pending = frame(T_ACK, rref)
            else:
                self.sock.sendall(frame(T_ACK, rref))
            out.append(json_or_text(result))
        return out

    def drain(self, secs=0.5):
        end = time.monotonic() + secs
        got = []
        for _ in range(100):
            if time.monotonic() > end:
                break
            try:
                f = read_frame(self.r, deadline=end)
            except Closed:
                break
            if f is None:
                break
            got.append(f)
        return got

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


class LineClient:
    def __init__(self, port=TCP_PORT, host=HOST4):
        self.sock = connect(port, host)
        self.r = Reader(self.sock, None, timeout=10)

    def send(self, data: bytes):
        self.sock.sendall(data)

    def read_json(self):
        dec = json.JSONDecoder()
        for _ in range(1000):
            txt = self.r.buf.decode("utf-8", "replace").lstrip()
            if txt:
                try:
                    obj, end = dec.raw_decode(txt)
                    lead = len(self.r.buf.decode("utf-8", "replace")) - len(txt)
                    self.r.take(len(self.r.buf.decode("utf-8", "replace")[:lead + end].encode()))
                    while self.r.buf[:1] in (b"\n", b"\r"):
                        self.r.take(1)
                    return obj
                except ValueError:
                    pass
            if not self.r.fill():
                return None
        return None

    def close(self):
        try:
            self.sock.close()
        except OSError:
            pass


def expect(resp, respcd="6000"):
    got = resp.get("respcd") if isinstance(resp, dict) else resp
    if got != respcd:
        raise AssertionError(f"expected respcd {respcd}, got {resp!r}")
    return resp


# --------------------------------------------------------------------------------------
# Capturing
# --------------------------------------------------------------------------------------
class Capture:
    def __init__(self, path, tool="tcpdump", snaplen=None, iface="lo", filt=CAPTURE_FILTER,
                 nano=False, linktype=None):
        self.path, self.tool, self.snaplen, self.iface = path, tool, snaplen, iface
        self.filt, self.nano, self.linktype = filt, nano, linktype
        self.proc = None

    def start(self):
        if os.path.exists(self.path):
            os.unlink(self.path)
        if self.tool == "tcpdump":
            cmd = ["tcpdump", "-i", self.iface, "-w", self.path, "-U", "--immediate-mode", "-Z", "root", "-n"]
            if self.snaplen:
                cmd += ["-s", str(self.snaplen)]
            if self.nano:
                cmd += ["--time-stamp-precision=nano"]
            if self.linktype:
                cmd += ["-y", self.linktype]
            cmd.append(self.filt)
            ready = "listening on"
        else:
            cmd = ["dumpcap", "-i", self.iface, "-f", self.filt, "-w", self.path]
            ready = "Capturing on"
        self.proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
        deadline = time.monotonic() + 10
        seen = ""
        while time.monotonic() < deadline:
            r, _, _ = select.select([self.proc.stderr], [], [], 0.2)
            if r:
                seen += os.read(self.proc.stderr.fileno(), 4096).decode("utf-8", "replace")
                if ready in seen:
                    break
            if self.proc.poll() is not None:
                raise RuntimeError(f"{self.tool} exited: {seen}")
        else:
            self.stop()
            raise RuntimeError(f"{self.tool} not ready: {seen}")
        time.sleep(0.3)

    def stop(self):
        if self.proc is None:
            return
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGINT)
            try:
                self.proc.wait(8)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait(3)
        self.proc = None


# --------------------------------------------------------------------------------------
# pcap post-processing (classic pcap, Ethernet or any link we capture with tcpdump -i lo)
# --------------------------------------------------------------------------------------
def read_pcap(path):
    with open(path, "rb") as f:
        data = f.read()
    magic = data[:4]
    endian = "<" if magic in (b"\xd4\xc3\xb2\xa1", b"\x4d\x3c\xb2\xa1") else ">"
    hdr = data[:24]
    linktype = struct.unpack(endian + "I", data[20:24])[0]
    recs, off = [], 24
    while off + 16 <= len(data):
        ts, frac, incl, orig = struct.unpack(endian + "IIII", data[off:off + 16])
        recs.append([ts, frac, orig, data[off + 16:off + 16 + incl]])
        off += 16 + incl
    return hdr, endian, linktype, recs


def write_pcap(path, hdr, endian, recs):
    with open(path, "wb") as f:
        f.write(hdr)
        for ts, frac, orig, pkt in recs:
            f.write(struct.pack(endian + "IIII", ts, frac, len(pkt), max(orig, len(pkt)) if orig else len(pkt)))
            f.write(pkt)


def tcp_fields(pkt):
    """Ethernet/IPv4/TCP only (that is what tcpdump -i lo writes)."""
    if len(pkt) < 14 + 20 or pkt[12:14] != b"\x08\x00":
        return None
    ip = 14
    ihl = (pkt[ip] & 0x0F) * 4
    if pkt[ip + 9] != 6:
        return None
    t = ip + ihl
    sport, dport, seq = struct.unpack(">HHI", pkt[t:t + 8])
    doff = (pkt[t + 12] >> 4) * 4
    payload = pkt[t + doff:]
    return {"sport": sport, "dport": dport, "seq": seq, "flags": pkt[t + 13], "ip": ip, "ihl": ihl,
            "tcp": t, "doff": doff, "payload": payload}


def _csum(data: bytes) -> int:
    if len(data) % 2:
        data += b"\x00"
    s = sum(struct.unpack(f">{len(data) // 2}H", data))
    while s >> 16:
        s = (s & 0xFFFF) + (s >> 16)
    return (~s) & 0xFFFF


def rebuild_tcp(pkt, new_seq, new_payload):
    f = tcp_fields(pkt)
    ip, t, doff = f["ip"], f["tcp"], f["doff"]
    iph = bytearray(pkt[ip:t])
    tcph = bytearray(pkt[t:t + doff])
    struct.pack_into(">H", iph, 2, len(iph) + len(tcph) + len(new_payload))
    struct.pack_into(">H", iph, 10, 0)
    struct.pack_into(">H", iph, 10, _csum(bytes(iph)))
    struct.pack_into(">I", tcph, 4, new_seq)
    struct.pack_into(">H", tcph, 16, 0)
    pseudo = bytes(iph[12:20]) + struct.pack(">BBH", 0, 6, len(tcph) + len(new_payload))
    struct.pack_into(">H", tcph, 16, _csum(pseudo + bytes(tcph) + new_payload))
    return pkt[:ip] + bytes(iph) + bytes(tcph) + new_payload


def _ts_between(a, b, endian_nano=False):
    ta = a[0] + a[1] / 1e6
    tb = b[0] + b[1] / 1e6
    m = (ta + tb) / 2
    return int(m), int(round((m - int(m)) * 1e6))


def post_drop_request(path, nth_request=2):
    """tcp-gap: drop the ECR->POS segment carrying the nth HTTP request on port 9001."""
    hdr, en, lt, recs = read_pcap(path)
    n = 0
    for i, r in enumerate(recs):
        f = tcp_fields(r[3])
        if f and f["dport"] == HTTP_PORT and f["payload"].startswith(b"POST "):
            n += 1
            if n == nth_request:
                dropped = len(f["payload"])
                del recs[i]
                write_pcap(path, hdr, en, recs)
                return f"dropped packet {i + 1} (the segment carrying HTTP request {nth_request}, {dropped} bytes)"
    raise RuntimeError("request segment not found")


def post_reorder(path):
    """Reorder, retransmit and overlap the segments of the multi-segment request body."""
    hdr, en, lt, recs = read_pcap(path)
    segs = [i for i, r in enumerate(recs)
            if (f := tcp_fields(r[3])) and f["dport"] == HTTP_PORT and f["payload"]]
    # the first connection's request: headers, body part 1, body part 2, body part 3
    a, b, c, d = segs[:4]
    fa, fb, fc = tcp_fields(recs[a][3]), tcp_fields(recs[b][3]), tcp_fields(recs[c][3])
    notes = []
    # 1) swap the packet data of body parts 1 and 2 (file order by time, seq out of order)
    recs[b][3], recs[c][3] = recs[c][3], recs[b][3]
    recs[b][2], recs[c][2] = recs[c][2], recs[b][2]
    notes.append(f"packets {b + 1} and {c + 1} swapped (body part 2 before part 1)")
    # 2) an overlapping retransmission: second half of part 1 + first half of part 2
    p1, p2 = fb["payload"], fc["payload"]
    ov_payload = p1[len(p1) // 2:] + p2[:len(p2) // 2]
    ov = rebuild_tcp(recs[c][3], fb["seq"] + len(p1) // 2, ov_payload)
    ts = _ts_between(recs[c], recs[c + 1])
    recs.insert(c + 1, [ts[0], ts[1], len(ov), ov])
    notes.append(f"packet {c + 2} inserted: overlapping segment ({len(ov_payload)} bytes spanning parts 1 and 2)")
    # 3) a full retransmission of the header segment after the body
    dup = recs[a][3]
    k = c + 2
    ts = _ts_between(recs[k - 1], recs[k])
    recs.insert(k, [ts[0], ts[1], len(dup), dup])
    notes.append(f"packet {k + 1} inserted: exact retransmission of packet {a + 1} (request headers)")
    write_pcap(path, hdr, en, recs)
    return "; ".join(notes)


def count_truncated(path):
    hdr, en, lt, recs = read_pcap(path)
    return sum(1 for r in recs if len(r[3]) < r[2])


# --------------------------------------------------------------------------------------
# Scenarios
# --------------------------------------------------------------------------------------
SCENARIOS = []


class MadeElsewhere(Exception):
    """A scenario whose capture the project's Rust code makes (captures/regenerate.sh:
    `ecr-sniff emulate` and `send`, and the damaged_captures example); only its
    expectations stay here, for manifest.json and README.md."""


def scenario(name, file, keys, expect_findings, func_types, transactions, notes, *, tool="tcpdump",
             snaplen=None, post=None, nano=False, linktype=None, iface="lo", filt=CAPTURE_FILTER,
             servers=None, no_key=None, transport="", dialect="", gz=False, messages=None, extra=None,
             made_by=None):
    def deco(fn):
        SCENARIOS.append(dict(name=name, file=file, keys=keys, findings=expect_findings,
                              func_types=func_types, transactions=transactions, notes=notes, tool=tool,
                              snaplen=snaplen, post=post, nano=nano, linktype=linktype, iface=iface,
                              filt=filt, servers=servers or {}, run=fn, no_key=no_key,
                              transport=transport, dialect=dialect, gz=gz, messages=messages,
                              extra=extra or {}, made_by=made_by))
        return fn
    return deco


ALL6 = {"1001": 1, "1002": 1, "3001": 1, "3002": 1, "4001": 1, "5001": 1}
C_CARD = {"func_type": 1001, "amt": 10.1, "channel": "card_payment", "out_trade_no": OUT_TRADE_NO}


def pay(amt, channel, otn, **extra):
    c = {"func_type": 1001, "amt": amt, "channel": channel, "out_trade_no": otn}
    c.update(extra)
    return c


def six_contents(amt, channel, otn, order_ref, refund_amount=None):
    refund = {"func_type": 1002, "orderId": order_ref, "moveToBack": 1}
    if refund_amount is not None:
        refund["refund_amount"] = refund_amount
    return [
        pay(amt, channel, otn, camera_id=0, moveToBack=1, wait_card_timeout=120),
        {"func_type": 4001, "orderId": order_ref},
        {"func_type": 3001, "orderId": order_ref},
        refund,
        {"func_type": 3002},
        {"func_type": 5001},
    ]


# ---------------- clean HTTP ----------------
@scenario("http-plain", "http-plain-all-functypes.pcap", [KEY_DEFAULT], {}, ALL6, 6,
          "Plain dialect (encryption off), one TCP connection per request (Connection: close). "
          "Payment card_payment amt 10.1 -> inquiry, receipt, full refund (no refund_amount) of its syssn, "
          "summary, cancel.", transport="http", dialect="plain", no_key=0,
          servers=dict(syssn_base=61880690))
def s_http_plain(ctx):
    p = expect(http_once(1001, body_plain(six_contents(10.1, "card_payment", OUT_TRADE_NO, "x")[0], KEY_DEFAULT)))
    syssn = resp_data(p)["syssn"]
    for c in six_contents(10.1, "card_payment", OUT_TRADE_NO, syssn)[1:]:
        expect(http_once(c["func_type"], body_plain(c, KEY_DEFAULT)))


@scenario("http-content-encrypted", "http-content-encrypted-pipelined.pcap", [KEY_DEFAULT], {}, ALL6, 6,
          "Content-encrypted dialect (content = Base64 AES, digest = md5(Base64 + key)). All six requests "
          "PIPELINED: written back-to-back in one TCP segment on one keep-alive connection, then the six "
          "responses read in order. orderId = out_trade_no. Channel wx amt 88.8; refund_amount '88.80'.",
          transport="http", dialect="content-encrypted", no_key=6, servers=dict(syssn_base=61881000))
def s_http_content(ctx):
    otn = "456700000088"
    c = HttpClient()
    data = b"".join(http_request_bytes("POST", FUNC_PATHS[x["func_type"]], body_content_encrypted(x, KEY_DEFAULT))
                    for x in six_contents(88.8, "wx", otn, otn, refund_amount="88.80"))
    c.sock.sendall(data)
    for _ in range(6):
        expect(c.read())
    c.close()


@scenario("http-envelope", "http-envelope-encrypted-keepalive.pcap", [KEY_DEFAULT], {}, ALL6, 6,
          "Envelope-encrypted dialect (Odoo): body is a JSON string literal holding Base64 of AES of the lenient "
          "envelope. Six requests one after another on ONE keep-alive connection; the payment request is sent "
          "with headers and body in two separate TCP segments. Channel alipay amt 39.9.",
          transport="http", dialect="envelope-encrypted", no_key=6, servers=dict(syssn_base=61882000))
def s_http_envelope(ctx):
    c = HttpClient()
    p = expect(c.request(1001, body_envelope(six_contents(39.9, "alipay", "456700000039", "x")[0], KEY_DEFAULT),
                         split_body=True))
    syssn = resp_data(p)["syssn"]
    for x in six_contents(39.9, "alipay", "456700000039", syssn)[1:]:
        expect(c.request(x["func_type"], body_envelope(x, KEY_DEFAULT)))
    c.close()


@scenario("http-envelope-aes128", "http-envelope-encrypted-aes128-bare.pcap", [KEY_128], {},
          {"1001": 1, "4001": 1}, 2,
          "AES-128 key a1b2c3d4e5f6a7b8; envelope-encrypted sent as BARE Base64 (not a JSON string). "
          "Octopus payment amt 25.5 then inquiry by syssn, one connection each.",
          transport="http", dialect="envelope-encrypted", no_key=2,
          servers=dict(syssn_base=61883000, keys=[KEY_128]))
def s_http_env128(ctx):
    p = expect(http_once(1001, body_envelope(pay(25.5, "octopus", "456700000025"), KEY_128, quoted=False)))
    syssn = resp_data(p)["syssn"]
    expect(http_once(4001, body_envelope({"func_type": 4001, "orderId": syssn}, KEY_128, quoted=False)))


@scenario("http-envelope-hexkey", "http-envelope-encrypted-hexkey.pcap", [KEY_DEFAULT], {},
          {"1001": 1}, 1,
          "Envelope-encrypted with the AES-128 key obtained by HEX-DECODING the default key (D3 fallback); "
          "the digest still appends the key text. The analyzer must report the hex interpretation.",
          transport="http", dialect="envelope-encrypted", no_key=1, servers=dict(syssn_base=61883500))
def s_http_hexkey(ctx):
    expect(http_once(1001, body_envelope(pay(66.6, "wx", "456700000066"), KEY_DEFAULT, enc_key=KEY_DEFAULT_HEX)))


@scenario("http-encrypted-responses", "http-envelope-encrypted-responses.pcap", [KEY_DEFAULT], {},
          {"1001": 1, "4001": 1}, 2,
          "Responses encrypted (D5 fallbacks): response 1 body is Base64 of AES(response JSON); response 2 is "
          "plain JSON whose data field is Base64 of AES(data JSON). Requests envelope-encrypted, one keep-alive "
          "connection, union amt 12.3. Without a key, the bare-Base64 response counts as no-key (it is "
          "Base64 of a multiple of 16 bytes), not bad-envelope.",
          transport="http", dialect="envelope-encrypted", no_key=4,
          servers=dict(syssn_base=61884000, encrypt_responses={0: "body", 1: "data"}))
def s_http_encresp(ctx):
    c = HttpClient()
    r1 = c.request(1001, body_envelope(pay(12.3, "union", "456700000012"), KEY_DEFAULT))
    resp = json.loads(aes_decrypt(KEY_DEFAULT, r1))
    expect(resp)
    syssn = resp_data(resp)["syssn"]
    r2 = c.request(4001, body_envelope({"func_type": 4001, "orderId": syssn}, KEY_DEFAULT))
    expect(r2)
    c.close()


@scenario("http-slow-terminal", "http-slow-terminal.pcap", [KEY_DEFAULT], {}, {"4001": 1, "1001": 1}, 2,
          "Latency figures: a payment answered after 2.5 s (`emulate --delay 2.5`, the card tap) and an inquiry "
          "answered at once, envelope-encrypted, one connection each. Expected latency: max ~2500 ms, min a few ms.",
          transport="http", dialect="envelope-encrypted", no_key=2,
          servers=dict(syssn_base=61885000, overrides={0: {"delay": 2.5}}),
          extra={"latency_ms": {"max_at_least": 2500, "min_at_most": 500}}, made_by="regenerate.sh")
def s_http_slow(ctx):
    raise MadeElsewhere()


@scenario("http-ipv6-nano", "http-plain-ipv6-nanosecond.pcap", [KEY_DEFAULT], {}, {"1001": 1, "4001": 1}, 2,
          "IPv6 loopback [::1]:9001, pcap with NANOSECOND timestamps (magic a1b23c4d). Plain dialect, "
          "fps amt 45.0, one keep-alive connection.", transport="http", dialect="plain", no_key=0, nano=True,
          servers=dict(syssn_base=61886000, host=HOST6))
def s_http_ipv6(ctx):
    c = HttpClient(host=HOST6)
    p = expect(c.request(1001, body_plain(pay(45.0, "fps", "456700000045"), KEY_DEFAULT)))
    expect(c.request(4001, body_plain({"func_type": 4001, "orderId": resp_data(p)["syssn"]}, KEY_DEFAULT)))
    c.close()


@scenario("http-reordered", "http-reordered-retransmitted.pcap", [KEY_DEFAULT], {}, {"1001": 1}, 1,
          "POST-PROCESSED (damaged_captures reorder) from a live plain wx payment: the request is cut into three segments (head, body in two); the body segments are swapped, an overlapping retransmission (same bytes) and an exact retransmission of the head are added. Reassembly must give the clean request; no findings.",
          transport="http", dialect="plain", no_key=0, post="reorder", servers=dict(syssn_base=61887000), made_by="regenerate.sh")
def s_http_reordered(ctx):
    raise MadeElsewhere()


# ---------------- clean TCP ----------------
@scenario("tcp-newline", "tcp-newline-envelope-encrypted.pcap", [KEY_DEFAULT], {},
          {"1001": 1, "4001": 1, "3001": 1, "5001": 1}, 4,
          "TCP 9002, D6 newline framing: bare Base64 of the envelope ending at \\n; responses plain JSON + \\n. "
          "Connection 1: payment (union amt 56.0), inquiry, receipt. Connection 2: a cancel sent WITHOUT newline "
          "and ended by half-close (shutdown SHUT_WR); the POS answers and closes.",
          transport="tcp", dialect="envelope-encrypted", no_key=4, servers=dict(syssn_base=61888000))
def s_tcp_newline(ctx):
    c = LineClient()
    c.send(body_envelope(pay(56.0, "union", "456700000056"), KEY_DEFAULT, quoted=False) + b"\n")
    syssn = resp_data(expect(c.read_json()))["syssn"]
    for x in ({"func_type": 4001, "orderId": syssn}, {"func_type": 3001, "orderId": syssn}):
        c.send(body_envelope(x, KEY_DEFAULT, quoted=False) + b"\n")
        expect(c.read_json())
    c.close()
    c = LineClient()
    c.send(body_envelope({"func_type": 5001}, KEY_DEFAULT, quoted=False))
    c.sock.shutdown(socket.SHUT_WR)
    expect(c.read_json())
    c.close()


@scenario("tcp-json", "tcp-json-values.pcap", [KEY_DEFAULT], {},
          {"1001": 1, "4001": 1, "3001": 1, "3002": 1}, 4,
          "TCP 9002, D6 JSON-value framing (no newlines, responses are bare JSON values). Connection 1: "
          "content-encrypted payment (fps amt 120.5) and inquiry. Connection 2: envelope-encrypted as a JSON "
          "string literal (receipt) and a plain-dialect summary.",
          transport="tcp", dialect="content-encrypted, envelope-encrypted, plain", no_key=3,
          servers=dict(syssn_base=61889000))
def s_tcp_json(ctx):
    c = LineClient()
    c.send(body_content_encrypted(pay(120.5, "fps", "456700000120"), KEY_DEFAULT))
    syssn = resp_data(expect(c.read_json()))["syssn"]
    c.send(body_content_encrypted({"func_type": 4001, "orderId": syssn}, KEY_DEFAULT))
    expect(c.read_json())
    c.close()
    c = LineClient()
    c.send(body_envelope({"func_type": 3001, "orderId": syssn}, KEY_DEFAULT, quoted=True))
    expect(c.read_json())
    c.send(body_plain({"func_type": 3002}, KEY_DEFAULT))
    expect(c.read_json())
    c.close()


@scenario("tcp-frames", "tcp-frames-envelope-encrypted.pcapng", [KEY_DEFAULT], {},
          {"1001": 1, "4001": 1, "3001": 1, "5001": 1}, 4,
          "pcapng (dumpcap). 0x2f6e frames over TCP 9002, data = bare Base64 envelope. Payment (card_payment "
          "amt 10.1): request ref 1, ack, result as a POS request (POS ref 1), ECR ack. Then inquiry ref 2 and "
          "receipt ref 3 in ONE TCP segment; the POS sends ack + result in one segment for each; the ECR's ack "
          "of the last result shares a segment with the cancel request ref 4.",
          tool="dumpcap", transport="tcp", dialect="envelope-encrypted", no_key=4,
          servers=dict(syssn_base=61890000))
def s_tcp_frames(ctx):
    c = FrameClient()
    syssn = resp_data(expect(c.transact(body_envelope(C_CARD, KEY_DEFAULT, quoted=False))))["syssn"]
    rs = c.transact_many([body_envelope({"func_type": 4001, "orderId": syssn}, KEY_DEFAULT, quoted=False),
                          body_envelope({"func_type": 3001, "orderId": syssn}, KEY_DEFAULT, quoted=False)],
                         hold_last_ack=True)
    for r in rs:
        expect(r)
    expect(c.transact(body_envelope({"func_type": 5001}, KEY_DEFAULT, quoted=False)))
    c.close()


@scenario("tcp-frames-split", "tcp-frames-split-summary.pcap", [KEY_DEFAULT], {}, {"1001": 1, "3002": 1}, 2,
          "0x2f6e frames over TCP: wx payment (amt 10.1), then a transaction summary whose result (~2500 bytes "
          "of plain JSON) the POS splits into 3 fragments (1024 + 1024 + rest, same ref, data_len = whole). "
          "The ECR's ack of the payment result shares a segment with the summary request.",
          transport="tcp", dialect="envelope-encrypted", no_key=2,
          servers=dict(syssn_base=61891000, summary_items=11))
def s_tcp_split(ctx):
    c = FrameClient()
    expect(c.transact(body_envelope(pay(10.1, "wx", "456700000010"), KEY_DEFAULT, quoted=False), hold_ack=True))
    r = expect(c.transact(body_envelope({"func_type": 3002}, KEY_DEFAULT, quoted=False)))
    size = len(jdump(r).encode())
    ctx["notes"].append(f"summary result is {size} data bytes")
    assert 2049 < size < 3072, size
    c.close()


@scenario("tcp-frames-plain", "tcp-frames-plain-string-content.pcap", [KEY_128], {}, {"1001": 1, "4001": 1}, 2,
          "0x2f6e frames, PLAIN dialect with content as a JSON string (like the spec's serial sample), "
          "AES-128 key a1b2c3d4e5f6a7b8 for the digest. amex_card amt 10.1, then inquiry.",
          transport="tcp", dialect="plain", no_key=0, servers=dict(syssn_base=61892000, keys=[KEY_128]))
def s_tcp_frames_plain(ctx):
    c = FrameClient()
    syssn = resp_data(expect(c.transact(body_plain(pay(10.1, "amex_card", "456700000110"), KEY_128,
                                                   content_as_string=True))))["syssn"]
    expect(c.transact(body_plain({"func_type": 4001, "orderId": syssn}, KEY_128, content_as_string=True)))
    c.close()


@scenario("tcp-other-port", "tcp-frames-other-port-19002.pcap", [KEY_DEFAULT], {}, {"1001": 1}, 1,
          "0x2f6e frames on NON-DEFAULT port 19002 (`emulate --tcp-port 19002`, `send --tcp-framing frames`; capture filter includes it). With default ports the "
          "analyzer sees no ECR traffic (0 messages, 0 transactions); with the probe enabled (or port 19002 "
          "configured as TCP) it finds 1 transaction and the expectations above apply (expect_without_key too).",
          transport="tcp", dialect="envelope-encrypted", no_key=1,
          filt="tcp port 9001 or tcp port 9002 or tcp port 19002",
          servers=dict(syssn_base=61893000, http_port=None, tcp_port=OTHER_PORT),
          extra={"default_ports": {"transactions": 0, "messages": 0, "findings": {}}, "port": OTHER_PORT},
          made_by="regenerate.sh")
def s_tcp_other(ctx):
    raise MadeElsewhere()


@scenario("tcp-any-gzip", "tcp-newline-any-interface-sll2.pcap.gz", [KEY_DEFAULT], {}, {"1001": 1, "4001": 1}, 2,
          "Captured with tcpdump -i any -y LINUX_SLL2 (Linux cooked v2 link type), then gzip-compressed. "
          "TCP 9002 newline framing, envelope-encrypted, unionpay_card amt 23.4, then inquiry.",
          transport="tcp", dialect="envelope-encrypted", no_key=2, iface="any", linktype="LINUX_SLL2", gz=True,
          filt="host 127.0.0.1 and (tcp port 9001 or tcp port 9002)", servers=dict(syssn_base=61894000))
def s_tcp_any(ctx):
    c = LineClient()
    c.send(body_envelope(pay(23.4, "unionpay_card", "456700000023"), KEY_DEFAULT, quoted=False) + b"\n")
    syssn = resp_data(expect(c.read_json()))["syssn"]
    c.send(body_envelope({"func_type": 4001, "orderId": syssn}, KEY_DEFAULT, quoted=False) + b"\n")
    expect(c.read_json())
    c.close()


@scenario("mixed", "mixed-http-tcp.pcapng", [KEY_DEFAULT], {},
          {"1001": 4, "4001": 2, "3002": 1, "1002": 1}, 8,
          "pcapng (dumpcap). Clean traffic interleaved from three threads: HTTP plain (payment fps 30.0, "
          "inquiry; the inquiry response is CHUNKED), HTTP envelope (payment wx 15.5, full refund with "
          "refund_amount '15.50'), TCP newline envelope (payment alipay 8.8, inquiry), TCP frames (payment "
          "octopus 50.0, summary).", tool="dumpcap", transport="http+tcp",
          dialect="plain, envelope-encrypted", no_key=5, servers=dict(syssn_base=61895000, chunk_ft={4001}))
def s_mixed(ctx):
    errs = []

    def run(fn):
        try:
            fn()
        except Exception as e:  # noqa
            errs.append(e)

    def http_plain():
        c = HttpClient()
        p = expect(c.request(1001, body_plain(pay(30.0, "fps", "456700000030"), KEY_DEFAULT)))
        expect(c.request(4001, body_plain({"func_type": 4001, "orderId": resp_data(p)["syssn"]}, KEY_DEFAULT)))
        c.close()

    def http_env():
        time.sleep(0.05)
        c = HttpClient()
        p = expect(c.request(1001, body_envelope(pay(15.5, "wx", "456700000015"), KEY_DEFAULT)))
        expect(c.request(1002, body_envelope({"func_type": 1002, "orderId": resp_data(p)["syssn"],
                                              "refund_amount": "15.50"}, KEY_DEFAULT)))
        c.close()

    def tcp_line():
        time.sleep(0.1)
        c = LineClient()
        c.send(body_envelope(pay(8.8, "alipay", "456700000008"), KEY_DEFAULT, quoted=False) + b"\n")
        syssn = resp_data(expect(c.read_json()))["syssn"]
        c.send(body_envelope({"func_type": 4001, "orderId": syssn}, KEY_DEFAULT, quoted=False) + b"\n")
        expect(c.read_json())
        c.close()

    def tcp_frames():
        time.sleep(0.15)
        c = FrameClient()
        expect(c.transact(body_envelope(pay(50.0, "octopus", "456700000050"), KEY_DEFAULT, quoted=False)))
        expect(c.transact(body_plain({"func_type": 3002}, KEY_DEFAULT)))
        c.close()

    ths = [threading.Thread(target=run, args=(f,)) for f in (http_plain, http_env, tcp_line, tcp_frames)]
    for t in ths:
        t.start()
    for t in ths:
        t.join(30)
    if errs:
        raise errs[0]


# ---------------- faults: digests and envelopes ----------------
@scenario("http-digest-mismatch", "http-digest-mismatch.pcap", [KEY_DEFAULT],
          {"digest-mismatch": 1, "error-response": 1}, {"1001": 1}, 1,
          "Plain dialect, a digest that matches no known signing mistake (`send --digest`); the terminal "
          "answers 4003 Request Denied.", transport="http", dialect="plain", no_key=0,
          servers=dict(syssn_base=61900000), made_by="regenerate.sh")
def s_digest(ctx):
    raise MadeElsewhere()


for _m, _desc, _dg in (("double-quotes", "double quotes instead of single", "4472fcdc61975ab051cabe0cf152ab00"),
                       ("unsorted-keys", "keys not sorted", "94653711566c4cd076ecd958f4dce23a"),
                       ("amount-reformatted", "amount reformatted (10.10 for 10.1): wire says amt 10.1, "
                        "digest signs amt=10.10", "f9c08aa7a68521b7c7a8f55587cea692"),
                       ("key-not-appended", "key not appended", "4c56244027ce9b14d1bcbeeccbd95192")):
    def _mk():
        def run(ctx):
            raise MadeElsewhere()
        return run
    scenario(f"http-digest-{_m}", f"http-digest-mismatch-{_m}.pcap", [KEY_128],
             {"digest-mismatch": 1, "error-response": 1}, {"1001": 1}, 1,
             f"Signing mistake '{_desc}' from vectors.json signing_mistakes: plain dialect, AES-128 key "
             f"a1b2c3d4e5f6a7b8, content = the vector's (card_payment amt 10.1 out_trade_no {OUT_TRADE_NO}, in "
             f"that order), sent with `send --json ... --digest {_dg}`. The digest-mismatch detail must name "
             f"this mistake. Terminal answers 4003.",
             transport="http", dialect="plain", no_key=0,
             servers=dict(syssn_base=61901000, keys=[KEY_128]), extra={"digest": _dg, "mistake": _m},
             made_by="regenerate.sh")(_mk())


@scenario("http-decrypt-failed", "http-decrypt-failed.pcap", [KEY_DEFAULT],
          {"decrypt-failed": 1, "error-response": 1}, {}, 1,
          "Envelope-encrypted with a key the analyzer is not given (`send --key 9d8c7b6a5f4e3d2c1b0a99887766554f`); the terminal (default key) answers 5001 Decryption Failed. func_type unknown without the key. Given the wrong key as well, it decrypts (a 1001 wx payment) and only error-response remains.",
          transport="http", dialect="envelope-encrypted", no_key=1, servers=dict(syssn_base=61902000), made_by="regenerate.sh")
def s_decrypt(ctx):
    raise MadeElsewhere()


@scenario("http-bad-envelope", "http-bad-envelope.pcap", [KEY_DEFAULT], {"bad-envelope": 1, "error-response": 1},
          {}, 1, "Body is JSON but no ECR envelope ({\"amount\":..,\"type\":\"sale\"}, `send --raw-body`); "
          "terminal answers 4006.",
          transport="http", dialect="", no_key=0, servers=dict(syssn_base=61903000), made_by="regenerate.sh")
def s_bad_env(ctx):
    raise MadeElsewhere()


@scenario("tcp-unknown-func-type", "tcp-unknown-func-type.pcap", [KEY_DEFAULT],
          {"unknown-func-type": 1, "error-response": 1}, {"9999": 1}, 1,
          "TCP 9002 newline framing, envelope-encrypted, `send --json '{\"func_type\":9999}'`; the terminal answers 4006. (TCP, so no HTTP path question arises.)", transport="tcp", dialect="envelope-encrypted", no_key=1,
          servers=dict(syssn_base=61904000), made_by="regenerate.sh")
def s_unknown_ft(ctx):
    raise MadeElsewhere()


@scenario("http-unknown-channel", "http-unknown-channel.pcap", [KEY_DEFAULT],
          {"unknown-channel": 1, "error-response": 1}, {"1001": 1}, 1,
          "Envelope-encrypted payment with channel 'bitcoin' (`send pay --channel bitcoin`); terminal answers 4006.",
          transport="http", dialect="envelope-encrypted", no_key=1, servers=dict(syssn_base=61905000), made_by="regenerate.sh")
def s_unknown_ch(ctx):
    raise MadeElsewhere()


@scenario("http-missing-field", "http-missing-field.pcap", [KEY_DEFAULT],
          {"missing-field": 1, "error-response": 1}, {"1001": 1}, 1,
          "Envelope-encrypted payment without amt (`send --json` with channel wx only); terminal answers 4006.",
          transport="http", dialect="envelope-encrypted", no_key=1, servers=dict(syssn_base=61906000), made_by="regenerate.sh")
def s_missing(ctx):
    raise MadeElsewhere()


@scenario("http-wrong-method", "http-wrong-method.pcap", [KEY_DEFAULT], {"http-method": 1, "error-response": 1},
          {"1001": 1}, 1,
          "GET /api/pos/trade carrying a valid plain-dialect payment body (`send --method GET`); the terminal answers 4004 Incorrect Method.", transport="http", dialect="plain", no_key=0,
          servers=dict(syssn_base=61907000), made_by="regenerate.sh")
def s_method(ctx):
    raise MadeElsewhere()


@scenario("http-path-mismatch", "http-path-mismatch.pcap", [KEY_DEFAULT], {"http-path-mismatch": 1},
          {"1001": 1, "1002": 1}, 2,
          "wx payment on /api/pos/trade, then its full refund (func_type 1002) sent to /api/pos/trade instead of /api/pos/cancel (`send --path /api/pos/trade refund`); the terminal dispatches on func_type and answers 6000. Envelope-encrypted.",
          transport="http", dialect="envelope-encrypted", no_key=2, servers=dict(syssn_base=61908000), made_by="regenerate.sh")
def s_path(ctx):
    raise MadeElsewhere()


@scenario("http-error-responses", "http-error-responses.pcap", [KEY_DEFAULT],
          {"cancelled": 1, "error-response": 3},
          {"1001": 3, "5001": 1, "1002": 1}, 5,
          "Valid envelope-encrypted requests the terminal refuses: payment -> 4003 (terminal busy); refund -> "
          "4006; payment -> 5001 (terminal-side decrypt error); a payment on connection A kept waiting while a "
          "cancel (5001) on connection B succeeds (6000) and the payment then answers 6001 Request Cancelled. "
          "error-response x3 (4003, 4006, 5001) and cancelled x1 (6001, info).",
          transport="http", dialect="envelope-encrypted", no_key=5,
          servers=dict(syssn_base=61909000,
                       overrides={0: {"respcd": "4003"}, 1: {"respcd": "4006"}, 2: {"respcd": "5001"},
                                  3: {"wait_cancel": True}}))
def s_errors(ctx):
    c = HttpClient()
    expect(c.request(1001, body_envelope(pay(10.1, "card_payment", "456700000201"), KEY_DEFAULT)), "4003")
    expect(c.request(1002, body_envelope({"func_type": 1002, "orderId": "20250703155400020061880690",
                                          "refund_amount": "999.00"}, KEY_DEFAULT)), "4006")
    expect(c.request(1001, body_envelope(pay(10.1, "wx", "456700000203"), KEY_DEFAULT)), "5001")
    res = {}

    def waiting():
        res["r"] = c.request(1001, body_envelope(pay(64.0, "alipay", "456700000204"), KEY_DEFAULT))

    th = threading.Thread(target=waiting)
    th.start()
    time.sleep(0.8)
    expect(http_once(5001, body_envelope({"func_type": 5001}, KEY_DEFAULT)))
    th.join(10)
    expect(res.get("r"), "6001")
    c.close()


@scenario("http-no-response", "http-no-response.pcap", [KEY_DEFAULT], {"no-response": 1}, {"1001": 1}, 0,
          "Envelope-encrypted payment; the terminal (`emulate --fault close-early`) reads it and closes the connection without answering.", transport="http", dialect="envelope-encrypted", no_key=1,
          servers=dict(syssn_base=61910000, overrides={0: {"close": True}}), made_by="regenerate.sh")
def s_noresp(ctx):
    raise MadeElsewhere()


@scenario("http-unanswered-at-end", "http-unanswered-at-end.pcap", [KEY_DEFAULT], {"unanswered-at-end": 1},
          {"1001": 1}, 0,
          "Envelope-encrypted card payment; the terminal (`emulate --delay 10`) is still waiting for the card when the capture is stopped ~1 s later (the connection is still open at the end of the file).",
          transport="http", dialect="envelope-encrypted", no_key=1,
          servers=dict(syssn_base=61911000, overrides={0: {"hang": True}}), made_by="regenerate.sh")
def s_unanswered(ctx):
    raise MadeElsewhere()


@scenario("http-tcp-gap", "http-tcp-gap.pcap", [KEY_DEFAULT], {"tcp-gap": 1}, {"1001": 1, "3001": 1}, 2,
          "POST-PROCESSED (damaged_captures gap 2): three requests, one connection each (payment, inquiry, receipt; envelope-encrypted); the data segments of the SECOND connection's request (the inquiry) were deleted from the file. Its response is still there and pairs with nothing; payment and receipt pair normally. func_types counts only what is visible (1001 and 3001).", transport="http", dialect="envelope-encrypted", no_key=2, post="gap",
          servers=dict(syssn_base=61912000), made_by="regenerate.sh")
def s_gap(ctx):
    raise MadeElsewhere()


@scenario("http-truncated", "http-truncated-snaplen80.pcap", [KEY_DEFAULT], {"truncated-packet": None}, {}, 0,
          "Captured with tcpdump -s 80: Ethernet+IPv4+TCP(with timestamps) headers take 66 bytes, so only 14 bytes of each data segment survive. One plain payment request and its response. truncated-packet is counted per cut packet (count measured from the file). The lost payload is NOT additionally a tcp-gap; no message can be decoded.", transport="http", dialect="plain", no_key=0, snaplen=80,
          servers=dict(syssn_base=61913000), made_by="regenerate.sh")
def s_trunc(ctx):
    raise MadeElsewhere()


@scenario("https-tls", "https-tls-encrypted.pcap", [KEY_DEFAULT], {"tls-encrypted": 1}, {}, 0,
          "HTTPS mode on 9001 (D7): `emulate --tls` (rustls, a self-signed certificate made at start) and `send --to https://... --insecure`: a real TLS handshake and an encrypted POST. One TLS connection; nothing else can be decoded.",
          transport="http(tls)", dialect="", no_key=0, servers=dict(syssn_base=61914000, tls=True), made_by="regenerate.sh")
def s_tls(ctx):
    raise MadeElsewhere()


@scenario("http-partial-card-refund", "http-partial-card-refund.pcap", [KEY_DEFAULT],
          {"partial-card-refund": 1}, {"1001": 1, "1002": 1}, 2,
          "card_payment amt 88.8 (txamt 8880), then a same-day refund of that syssn with refund_amount '20.00' "
          "(less than amt). Envelope-encrypted, keep-alive; both 6000.",
          transport="http", dialect="envelope-encrypted", no_key=2, servers=dict(syssn_base=61915000))
def s_partial(ctx):
    c = HttpClient()
    p = expect(c.request(1001, body_envelope(pay(88.8, "card_payment", "456700000888"), KEY_DEFAULT)))
    expect(c.request(1002, body_envelope({"func_type": 1002, "orderId": resp_data(p)["syssn"],
                                          "refund_amount": "20.00"}, KEY_DEFAULT)))
    c.close()


@scenario("http-payme-timeout", "http-payme-timeout.pcap", [KEY_DEFAULT], {"payme-timeout": 1}, {"1001": 1}, 1,
          "PayMe payment with payment_timeout 180 (max is 120; `send pay --channel payme --payment-timeout 180`); "
          "terminal answers 6000. Envelope-encrypted.",
          transport="http", dialect="envelope-encrypted", no_key=1, servers=dict(syssn_base=61916000),
          made_by="regenerate.sh")
def s_payme(ctx):
    raise MadeElsewhere()


# ---------------- faults: frames over TCP 9002 ----------------
def _frame_body(ft, **kw):
    c = {"func_type": ft}
    c.update(kw)
    return body_envelope(c, KEY_DEFAULT, quoted=False)


FRAME_PAY = lambda otn: body_envelope(pay(10.1, "wx", otn), KEY_DEFAULT, quoted=False)  # noqa


@scenario("frames-garbage", "tcp-frames-garbage-bytes.pcap", [KEY_DEFAULT], {"garbage-bytes": 1},
          {"1001": 2}, 2,
          "0x2f6e frames: payment ref 1 (clean), then 9 junk bytes (b'\\r\\nAT+OK\\r\\n') sent immediately "
          "before request ref 2 in the same segment; the POS skips them and answers ref 2 normally.",
          transport="tcp", dialect="envelope-encrypted", no_key=2, servers=dict(syssn_base=61920000))
def s_f_garbage(ctx):
    c = FrameClient()
    expect(c.transact(FRAME_PAY("456700000401")))
    expect(c.transact(FRAME_PAY("456700000402"), prefix=b"\r\nAT+OK\r\n"))
    c.close()


def _bad_frame_scenario(ctx, bad: bytes):
    c = FrameClient()
    expect(c.transact(FRAME_PAY("456700000411")))
    c.send(bad)
    f = c.read_answer(bad[4])
    assert f.type == 0x31, f
    c.ref = 2
    expect(c.transact(FRAME_PAY("456700000412")))
    c.close()


_BAD = {
    "bad-end-marker": ("a request frame ref 2 whose declared length ends at 0x0d0a instead of 2f6e",
                       lambda d: frame(T_REQ, 2, d, end=b"\r\n")),
    "unsupported-version": ("a request frame ref 2 with version byte 0x02",
                            lambda d: frame(T_REQ, 2, d, version=2)),
    "unknown-frame-type": ("a frame ref 2 of type 0x40 carrying a request",
                           lambda d: frame(0x40, 2, d)),
    "bad-length": ("a request frame ref 2 whose data_len is 10 less than total_len - 11 (D1 length error)",
                   lambda d: frame(T_REQ, 2, d, data_len=len(d) - 10)),
}
for _code, (_desc, _mk) in _BAD.items():
    def _run(ctx, mk=_mk):
        _bad_frame_scenario(ctx, mk(FRAME_PAY("456700000499")))
    scenario(f"frames-{_code}", f"tcp-frames-{_code}.pcap", [KEY_DEFAULT], {_code: 1, "error-frame": 1},
             {"1001": 2}, 2,
             f"0x2f6e frames: clean payment ref 1; then {_desc}; the POS answers an error frame 0x31 (format "
             f"error) with ref 2; then a clean payment ref 3. The bad frame's bytes are consumed by the {_code} "
             f"finding (no garbage-bytes). The bad frame is not counted as a message, but the 0x31 error frame "
             f"answers it (same ref, correct behaviour per spec 10.4/10.5), so it is NOT an unexpected-ack.",
             transport="tcp", dialect="envelope-encrypted", no_key=2,
             servers=dict(syssn_base=61921000))(_run)


@scenario("frames-bad-ref", "tcp-frames-bad-ref.pcap", [KEY_DEFAULT], {"bad-ref": 4}, {"1001": 1, "4001": 1}, 2,
          "0x2f6e frames: a payment request with ref 0x00 and an inquiry with ref 0x80. The POS accepts both "
          "(bad-ref is a warning) and echoes the ref in its acks, so 4 frames carry a bad ref: 2 requests + 2 "
          "acks (count is per frame). The POS's own result frames use refs 1 and 2.",
          transport="tcp", dialect="envelope-encrypted", no_key=2, servers=dict(syssn_base=61922000))
def s_f_badref(ctx):
    c = FrameClient()
    p = expect(c.transact(FRAME_PAY("456700000421"), ref=0x00))
    expect(c.transact(_frame_body(4001, orderId=resp_data(p)["syssn"]), ref=0x80))
    c.close()


@scenario("frames-oversize", "tcp-frames-oversize-frame.pcap", [KEY_DEFAULT], {"oversize-frame": 1},
          {"3002": 1}, 1,
          "0x2f6e frames: a summary request; the POS sends its ~1800-byte result in ONE unsplit frame "
          "(> 1024 data bytes).", transport="tcp", dialect="envelope-encrypted", no_key=1,
          servers=dict(syssn_base=61923000, summary_items=6, frame_ops={0: {"no_split": True}}))
def s_f_oversize(ctx):
    c = FrameClient()
    r = expect(c.transact(_frame_body(3002)))
    size = len(jdump(r).encode())
    assert 1024 < size < 2048, size
    ctx["notes"].append(f"result is {size} data bytes in one frame")
    c.close()


@scenario("frames-reassembly-timeout", "tcp-frames-reassembly-timeout.pcap", [KEY_DEFAULT],
          {"reassembly-timeout": 1}, {"3002": 1}, 1,
          "0x2f6e frames: a summary request; the POS splits its ~1800-byte result in 2 fragments and sends the "
          "second 600 ms after the first (> 500 ms). The ECR here is lenient: it reassembles and acks (no 0x35).",
          transport="tcp", dialect="envelope-encrypted", no_key=1,
          servers=dict(syssn_base=61924000, summary_items=6, frame_ops={0: {"frag_delay": 0.6}}))
def s_f_reasm(ctx):
    c = FrameClient()
    r = expect(c.transact(_frame_body(3002)))
    size = len(jdump(r).encode())
    assert 1024 < size < 2048, size
    ctx["notes"].append(f"result is {size} data bytes in 2 fragments")
    c.close()


@scenario("frames-ack-timeout", "tcp-frames-ack-timeout.pcap", [KEY_DEFAULT], {"ack-timeout": 1}, {"1001": 1}, 1,
          "0x2f6e frames: a payment request ref 1 whose ack arrives 1200 ms later (> 1000 ms); result and ECR ack "
          "follow normally. The late ack still matches its request (no unexpected-ack).",
          transport="tcp", dialect="envelope-encrypted", no_key=1,
          servers=dict(syssn_base=61925000, frame_ops={0: {"ack_delay": 1.2}}))
def s_f_acktimeout(ctx):
    c = FrameClient()
    expect(c.transact(FRAME_PAY("456700000441")))
    c.close()


@scenario("frames-unexpected-ack", "tcp-frames-unexpected-ack.pcap", [KEY_DEFAULT], {"unexpected-ack": 1},
          {"1001": 1}, 1,
          "0x2f6e frames: a clean payment; 300 ms after its result the POS sends an ack frame with ref 0x55 "
          "that no request ever used.", transport="tcp", dialect="envelope-encrypted", no_key=1,
          servers=dict(syssn_base=61926000, frame_ops={0: {"unsolicited_ack": 0x55}}))
def s_f_unexp(ctx):
    c = FrameClient()
    expect(c.transact(FRAME_PAY("456700000451")))
    got = c.drain(1.0)
    assert any(f.kind == "frame" and f.type == T_ACK and f.ref == 0x55 for f in got), got
    c.close()


@scenario("frames-error-frame", "tcp-frames-error-frame.pcap", [KEY_DEFAULT], {"error-frame": 1}, {"1001": 1}, 0,
          "0x2f6e frames: a payment request ref 1 encrypted with the default key; the POS is configured with a "
          "different key and answers error frame 0x33 (decryption error) ref 1; the ECR gives up and closes. "
          "The analyzer (with the default key) decrypts the request fine. The error frame answers the request "
          "(no ack-timeout, no no-response).", transport="tcp", dialect="envelope-encrypted", no_key=1,
          servers=dict(syssn_base=61927000, keys=[KEY_WRONG], frame_ops={0: {"error_frame": 0x33}}))
def s_f_error(ctx):
    c = FrameClient()
    f = c.transact(FRAME_PAY("456700000461"))
    assert isinstance(f, Frame) and f.type == 0x33, f
    time.sleep(0.1)
    c.close()


# --------------------------------------------------------------------------------------
# Running
# --------------------------------------------------------------------------------------
_TLS_CTX = None


def tls_context():
    global _TLS_CTX
    if _TLS_CTX is None:
        d = tempfile.mkdtemp(prefix="ecr-tls-")
        try:
            subprocess.run(["openssl", "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1",
                            "-nodes", "-keyout", f"{d}/k.pem", "-out", f"{d}/c.pem", "-days", "2",
                            "-subj", "/CN=127.0.0.1"], check=True, capture_output=True, timeout=30)
            ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
            ctx.load_cert_chain(f"{d}/c.pem", f"{d}/k.pem")
        finally:
            shutil.rmtree(d, ignore_errors=True)
        _TLS_CTX = ctx
    return _TLS_CTX


def run_scenario(sc, outdir):
    path = os.path.join(outdir, sc["file"])
    cap_path = path[:-3] if sc["gz"] else path
    sv = dict(sc["servers"])
    term = Terminal(sv.pop("keys", sc["keys"]), sv.pop("syssn_base"), overrides=sv.pop("overrides", None),
                    encrypt_responses=sv.pop("encrypt_responses", None),
                    summary_items=sv.pop("summary_items", 3))
    tls = sv.pop("tls", False)
    servers = Servers(term, tls_ctx=tls_context() if tls else None, frame_ops=sv.pop("frame_ops", None), **sv)
    ctx = {"notes": [], "cleanup": [], "servers": servers}
    cap = Capture(cap_path, tool=sc["tool"], snaplen=sc["snaplen"], iface=sc["iface"], filt=sc["filt"],
                  nano=sc["nano"], linktype=sc["linktype"])
    servers.start()
    try:
        cap.start()
        try:
            sc["run"](ctx)
            time.sleep(0.4)
        finally:
            cap.stop()
    finally:
        for fn in ctx["cleanup"]:
            fn()
        servers.stop()
    if servers.errors:
        raise RuntimeError(f"server errors: {servers.errors}")
    if sc["post"] == "gap":
        ctx["notes"].append(post_drop_request(cap_path, 2))
    elif sc["post"] == "reorder":
        ctx["notes"].append(post_reorder(cap_path))
    if sc["gz"]:
        with open(cap_path, "rb") as f, gzip.GzipFile(path, "wb", mtime=0) as g:
            g.write(f.read())
        os.unlink(cap_path)
    return ctx["notes"]


def manifest_entries(outdir):
    out = []
    for sc in SCENARIOS:
        findings = dict(sc["findings"])
        path = os.path.join(outdir, sc["file"])
        if "truncated-packet" in findings:
            findings["truncated-packet"] = count_truncated(path) if os.path.exists(path) else None
        e = {"file": sc["file"], "name": sc["name"], "keys": sc["keys"], "transport": sc["transport"],
             "dialect": sc["dialect"],
             "expect": {"findings": findings, "func_types": sc["func_types"], "transactions": sc["transactions"]},
             "expect_without_key": {"no-key": sc["no_key"]}, "notes": sc["notes"]}
        e.update(sc["extra"])
        if sc["post"]:
            e["postprocessed"] = True
        out.append(e)
    return out


SKIPPED = "skipped"


def selftest():
    """True when every vector checks out, False on a mismatch, SKIPPED (and a SKIP line)
    when the vectors are missing: a self-test that checked nothing never passes."""
    vp = os.path.join(HERE, "..", "crates", "ecr-proto", "tests", "data", "vectors.json")
    if not os.path.exists(vp):
        print(f"SKIP: {os.path.relpath(vp)} not found; nothing was checked")
        return SKIPPED
    with open(vp) as f:
        v = json.load(f)
    ok = True
    for e in v["envelopes"]:
        c = dict(e["content"])
        if e["dialect"] == "plain":
            got = body_plain(c, e["key"]).decode()
        elif e["dialect"] == "content-encrypted":
            got = body_content_encrypted(c, e["key"]).decode()
        else:
            got = body_envelope(c, e["key"]).decode()
        ok &= got == e["body"]
        print("envelope", e["dialect"], e["key"][:4], got == e["body"])
    for m, mk in zip(v["signing_mistakes"], ("double-quotes", "unsorted-keys", "amount-reformatted",
                                              "key-not-appended")):
        got = sign(dict(C_CARD), m["key"], mk)
        ok &= got == m["digest"]
        print("mistake", mk, got == m["digest"])
    checks = [(md5hex("{func_type=4001,orderId='12345678'}" + KEY_DEFAULT), "99ce8bf9c7304ac964522d10f51660b4"),
              (sign({"func_type": 5001}, KEY_DEFAULT), "77760cafee81dc33c720c90b75787b5f"),
              (body_envelope({"func_type": 4001, "orderId": "12345678"}, KEY_DEFAULT, quoted=False).decode(),
               "XczeNuwMCct+IaXZ00lv7Pern+ttWiSyG+Y62QH+wXr471L2opZR5JPeQPXADN/Xc1s+VL82RqBp0KFPo5Mm6KUFau0S1WRPC2YN4s6WpiFjwrbGPq3JPZ2OYXTGZHAb"),
              (body_envelope({"func_type": 5001}, "my_qfpay_pos_key", quoted=False).decode(),
               "lLrK/0SkJk9Yj8i7zPWfjh55pI6yoxnVhoKiybz6TtHDOAnwVZv9dDr+r/54ombsivgoiUVQ9c0jHxQXSddrd5KGwKLOoPT3IesvXKSHtXs=")]
    for got, want in checks:
        ok &= got == want
        print("decisions vector", got == want)
    for fr in v["frames"]:
        ok &= frame(fr["type"], fr["ref"], bytes.fromhex(fr["data_hex"])).hex() == fr["hex"]
    sp = v["split"][0]
    ok &= [f.hex() for f in message_frames(T_REQ, 0x11, bytes.fromhex(sp["data_hex"]))] == sp["fragments_hex"]
    print("frames", ok)
    t = Terminal([KEY_DEFAULT], 0)
    for e in v["envelopes"]:
        if e["key"] == KEY_DEFAULT:
            content, dialect, err, _ = t.decode(e["body"].encode())
            ok &= err is None and dialect == e["dialect"]
    print("terminal decode", ok)
    return ok


README_TEMPLATE = """# Sample ECR captures

Real loopback traffic between a Smart POS terminal emulator and a cash-register (ECR)
client, captured with `tcpdump -i lo` (or `dumpcap` for the `.pcapng` files). They cover
every request dialect (D4), every func_type, the TCP 9002 framings (D6) including 0x2f6e
frames (D1/D2), and each analyzer finding that can occur over TCP/HTTP. `manifest.json`
holds the same expectations as the table below, machine-readable; both are written by
`generate.py --docs` from its scenario definitions.

Two programs make the files (the table's last column says which):

- `regenerate.sh`: the project's own Rust code, so that a user can reproduce each
  fault with the tool: `ecr-sniff emulate` as the terminal and `ecr-sniff send` as the
  cash register, captured with tcpdump in a network namespace of its own, and the
  `damaged_captures` example of ecr-capture for damage no live exchange produces (a
  lost request, reordered and retransmitted segments).
- `generate.py`: a Python terminal and cash register, for the scenarios the Rust tools
  cannot produce yet (keep-alive and pipelining, bare Base64 over HTTP, hex keys,
  encrypted responses, IPv6 with nanosecond timestamps, the 0x2f6e frame faults over
  TCP, terminal-side overrides such as 4003/5001 refusals and partial card refunds, and
  a clean cancel: `emulate` answers every cancel 6001). It skips the files
  `regenerate.sh` makes.

## Regenerating

```
sudo bash captures/regenerate.sh                   # the Rust-made files (about 20 s)
sudo bash captures/regenerate.sh http-tcp-gap.pcap # one of them
ECR_SNIFF_BLESS=1 cargo test --test captures       # then the golden outputs in expected/
sudo python3 captures/generate.py                  # the other files (about 60 s)
python3 captures/generate.py --list                # scenario names, files, expected findings
sudo python3 captures/generate.py --only NAME[,NAME...]   # by scenario name or file name
python3 captures/generate.py --selftest            # codec vs crates/ecr-proto/tests/data/vectors.json + docs/protocol.md vectors
python3 captures/generate.py --docs                # rewrite manifest.json and README.md only
```

Needs root (tcpdump/dumpcap), `tcpdump`, `dumpcap` (wireshark-common), `openssl` (the
TLS capture's throw-away self-signed certificate), Python 3.11 and `cryptography`.
Everything runs on 127.0.0.1 / ::1 only, ports 9001, 9002 and (one capture) 19002.
tcpdump runs with `-U --immediate-mode` (without immediate mode, libpcap's TPACKET_V3
block buffering loses the last packets of short captures on SIGINT) and is stopped with
SIGINT in a `finally`.

Content is deterministic (fixed keys, out_trade_no, syssn, sysdtm, AES IV, so identical
ciphertext); timestamps, ephemeral ports, TCP sequence numbers and the TLS handshake
differ per run, so regenerated files are not byte-identical. Expectations do not depend
on them except for latency (slow-terminal) and the frame timing faults (600 ms, 1200 ms),
which have wide margins.

## Keys

| key | use |
|---|---|
| `f46b1f08bec1f39104792cc79ec9aacd` | default POS-KEY; AES-256 with the 32 text bytes (D3). Most captures. |
| `a1b2c3d4e5f6a7b8` | AES-128 text key: `http-envelope-encrypted-aes128-bare.pcap`, `tcp-frames-plain-string-content.pcap`, the four signing-mistake captures (the vectors.json key). |
| `9d8c7b6a5f4e3d2c1b0a99887766554f` | "wrong" key, never given to the analyzer: the request in `http-decrypt-failed.pcap`; the terminal's key in `tcp-frames-error-frame.pcap`. |
| hex-decoded default key (16 bytes) | `http-envelope-encrypted-hexkey.pcap` (D3 fallback; pass the default key). |

## How to read the expectations

Run the analyzer with the capture's `keys` (all of them as `--key`/`--key-file`); for
`tcp-frames-other-port-19002.pcap` additionally enable the probe or port 19002.

- **findings**: exact count per code; any code not listed must not be reported. Counting
  is per occurrence: per message for envelope/digest/field codes, per frame for frame
  codes (`bad-ref` counts each frame carrying the bad ref, so a request and the ack that
  echoes it count 2), per error frame for `error-frame`, per cut packet for
  `truncated-packet`, per hole for `tcp-gap`, per TLS connection for `tls-encrypted`.
  A request the terminal refuses normally also gets a non-6000 response, hence the
  `error-response x1` beside most request faults.
- **func_types**: ECR request messages per func_type that the analyzer can decode with
  the keys (requests only; responses, acks and error frames are not counted; malformed
  frames are not messages).
- **transactions**: requests paired with their business response (HTTP response; on
  TCP the response JSON; over frames the POS's result message, not the link-level 0x20
  ack). A request answered only by an error frame, or not at all, is not a transaction.
- **expect_without_key**: run with no key at all: `no-key` count = encrypted messages
  (encrypted requests plus encrypted responses); other results not asserted then.
- `latency_ms`, `default_ports`, `digest`, `mistake`: extra checks for single captures.

## What the emulator does

- HTTP: POST, `Content-Type: application/json`, paths per spec section 8, responses
  `HTTP/1.1 200` with plain D5 JSON (`data` is a JSON string). Refusals: digest wrong ->
  4003 Request Denied; no key decrypts -> 5001; not an envelope, unknown func_type,
  unknown channel, missing amt/channel/orderId -> 4006; method not POST -> 4004.
  Timing: payment 300 ms, refund 150 ms, other functions 50 ms.
- Success data: payment `txamt` in cents as a string, `txcurrcd` "344", 26-digit
  `syssn`, `busicd` = the channel's CPM PayType, masked card number and scheme for card
  channels (fields as in the real response of docs/protocol.md); refund, inquiry and summary
  data per spec section 6.
- Frames (D1/D2): each side numbers its own request messages from ref 1. The POS acks a
  complete request message with 0x20 (same ref, no data), then sends the business result as
  its own 0x10 message, which the ECR acks. Quick functions (3001, 3002, 4001, 5001) get
  ack + result in one TCP segment; payments get the ack at once and the result 300 ms
  later. Messages over 1024 data bytes are split into 1024-byte fragments, ack once per
  message. Malformed frames are answered with error frame 0x31 (format error).

## Post-processed captures (faults sockets cannot make)

- `http-tcp-gap.pcap`: the data segments of the second connection's request were
  deleted (`damaged_captures gap LIVE.pcap OUT.pcap 2`).
- `http-reordered-retransmitted.pcap`: the request cut in three segments, the two body
  segments swapped in file order, an overlapping retransmission and an exact
  retransmission of the head segment inserted (`damaged_captures reorder`); IP header
  checksums recomputed, timestamps stay monotonic.
- `tcp-newline-any-interface-sll2.pcap.gz`: gzip of a `-i any -y LINUX_SLL2` capture.
- `http-truncated-snaplen80.pcap` is not post-processed: tcpdump `-s 80` made it.

## Captures

| file | transport | dialect | func_types (requests) | transactions | expected findings | no-key without key | keys | contents | made by |
|---|---|---|---|---|---|---|---|---|---|
@@TABLE@@
"""


def write_docs(outdir):
    entries = manifest_entries(outdir)
    made_by = {sc["file"]: sc["made_by"] for sc in SCENARIOS if sc["made_by"]}
    with open(os.path.join(outdir, "manifest.json"), "w") as f:
        json.dump({"about": "Expected analyzer results for the sample captures; written by generate.py --docs. "
                            "See README.md for the conventions (what counts as a message/transaction).",
                   "captures": entries}, f, indent=1)
        f.write("\n")
    rows = []
    for e in entries:
        fi = ", ".join(f"{k} x{v}" for k, v in e["expect"]["findings"].items()) or "none"
        ft = ", ".join(f"{k} x{v}" for k, v in e["expect"]["func_types"].items()) or "-"
        keys = ", ".join("default (AES-256 text)" if k == KEY_DEFAULT else "a1b2c3d4e5f6a7b8 (AES-128)"
                         if k == KEY_128 else k for k in e["keys"])
        rows.append(f"| `{e['file']}` | {e['transport']} | {e['dialect'] or '-'} | {ft} | "
                    f"{e['expect']['transactions']} | {fi} | {e['expect_without_key']['no-key']} | {keys} | "
                    f"{e['notes'].replace('|', '/')} | {made_by.get(e['file'], 'generate.py')} |")
    tpl = README_TEMPLATE
    with open(os.path.join(outdir, "README.md"), "w") as f:
        f.write(tpl.replace("@@TABLE@@", "\n".join(rows)))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--list", action="store_true", help="list scenarios and exit")
    ap.add_argument("--only", help="comma-separated scenario names (or file names)")
    ap.add_argument("--selftest", action="store_true", help="check the codec against the spec vectors")
    ap.add_argument("--docs", action="store_true", help="only rewrite manifest.json and README.md")
    ap.add_argument("--outdir", default=HERE)
    a = ap.parse_args()
    if a.list:
        for sc in SCENARIOS:
            made = f"  (captures/{sc['made_by']})" if sc["made_by"] else ""
            print(f"{sc['name']:28} {sc['file']:48} {sc['findings'] or '{}'}{made}")
        return 0
    if a.selftest:
        r = selftest()
        # 77 is the conventional "skipped" exit status (automake, meson).
        return 77 if r is SKIPPED else (0 if r else 1)
    if a.docs:
        write_docs(a.outdir)
        return 0
    r = selftest()
    if r is SKIPPED or not r:
        print("selftest failed" if r is not SKIPPED else "selftest could not run", file=sys.stderr)
        return 1
    if os.geteuid() != 0:
        print("capturing needs root (tcpdump/dumpcap): sudo python3 captures/generate.py", file=sys.stderr)
        return 2
    todo = SCENARIOS
    if a.only:
        want = set(a.only.split(","))
        todo = [s for s in SCENARIOS if s["name"] in want or s["file"] in want]
        if not todo:
            print(f"no scenario named {a.only}; see --list", file=sys.stderr)
            return 2
    failed = []
    for sc in todo:
        if sc["made_by"]:
            print(f"skip {sc['file']:48} made by captures/{sc['made_by']}")
            continue
        t0 = time.monotonic()
        try:
            notes = run_scenario(sc, a.outdir)
            print(f"ok   {sc['file']:48} {time.monotonic() - t0:5.1f}s {'; '.join(notes)}")
        except Exception as e:  # noqa
            traceback.print_exc()
            failed.append(sc["name"])
            print(f"FAIL {sc['file']}: {e!r}")
        time.sleep(0.2)
    write_docs(a.outdir)
    if failed:
        print("failed:", ", ".join(failed), file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
