#!/usr/bin/env python3
"""Makes the HTTPS captures in captures/tls/ with TLS stacks this project did not write.

The terminal is `ecr-sniff emulate` over plain HTTP on 127.0.0.1:29101, behind a TLS
terminator written here with Python's `ssl` (OpenSSL) on 127.0.0.1:29001 that relays
the decrypted bytes unchanged. The clients are curl (OpenSSL), Python's `ssl` and
`openssl s_client` (for TLS 1.3 KeyUpdate), each writing its TLS secrets to a key
log (SSLKEYLOGFILE / keylog_filename / -keylogfile).
tcpdump captures both legs on the loopback interface, so every capture holds the
same HTTP session twice: encrypted on port 29001 and in the clear on port 29101.
tests/tls.rs checks that `analyze --tls-keylog` of the first equals the plain
analysis of the second, and that the decrypted bodies equal tshark's.

Writes, per scenario NAME: NAME.pcap, NAME.keylog (the client's key log: test
secrets of throwaway sessions), and for one scenario NAME-dsb.pcapng with the key
log embedded (editcap --inject-secrets). Then golden outputs in expected/.

Usage (root, for tcpdump):  python3 captures/tls/make.py [NAME...]
Needs: tcpdump, curl, openssl, editcap; ports 29001, 29101, 29201 free.
"""
import os
import select
import shutil
import socket
import ssl
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
KEY = "f46b1f08bec1f39104792cc79ec9aacd"
TLS_PORT, PLAIN_PORT, BRIDGE_PORT = 29001, 29101, 29201
BIN = os.environ.get("ECR_SNIFF", os.path.join(ROOT, "target/release/ecr-sniff"))
OP_NO_ENCRYPT_THEN_MAC = 1 << 19  # OpenSSL 3 SSL_OP_NO_ENCRYPT_THEN_MAC


def run(*args, **kw):
    return subprocess.run(args, check=True, **kw)


class Relay:
    """TLS terminator: accepts TLS on TLS_PORT and relays bytes to PLAIN_PORT."""

    def __init__(self, cert, key, no_etm=False, no_ticket=False):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        ctx.load_cert_chain(cert, key)
        ctx.set_ciphers("ALL:@SECLEVEL=0")
        if no_etm:
            ctx.options |= OP_NO_ENCRYPT_THEN_MAC
        if no_ticket:
            ctx.options |= ssl.OP_NO_TICKET
        self.ctx = ctx
        self.sock = socket.create_server(("127.0.0.1", TLS_PORT))
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self.conn, args=(c,), daemon=True).start()

    def conn(self, c):
        try:
            t = self.ctx.wrap_socket(c, server_side=True)
        except (ssl.SSLError, OSError):
            c.close()
            return
        b = socket.create_connection(("127.0.0.1", PLAIN_PORT))
        pipe(t, b)

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def pipe(a, b):
    """Relays between two sockets until one side closes; then closes both."""
    socks = [a, b]
    try:
        while True:
            pending = [s for s in socks if isinstance(s, ssl.SSLSocket) and s.pending()]
            r = pending or select.select(socks, [], [], 10)[0]
            if not r:
                break
            for s in r:
                data = s.recv(65536)
                if not data:
                    raise EOFError
                (b if s is a else a).sendall(data)
    except (EOFError, OSError, ssl.SSLError):
        pass
    for s in socks:
        try:
            if isinstance(s, ssl.SSLSocket):
                s.unwrap()
        except (OSError, ssl.SSLError, ValueError):
            pass
        s.close()


class Bridge:
    """Plain HTTP on BRIDGE_PORT to TLS on TLS_PORT with a Python ssl client (for
    `ecr-sniff send`, which speaks plain HTTP); records each request body."""

    def __init__(self, keylog, maximum=None):
        ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        ctx.check_hostname = False
        ctx.verify_mode = ssl.CERT_NONE
        ctx.keylog_filename = keylog
        if maximum:
            ctx.maximum_version = maximum
        self.ctx = ctx
        self.bodies = []
        self.sock = socket.create_server(("127.0.0.1", BRIDGE_PORT))
        self.stop = False
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        self.sock.settimeout(0.2)
        while not self.stop:
            try:
                c, _ = self.sock.accept()
            except (socket.timeout, OSError):
                continue
            threading.Thread(target=self.conn, args=(c,), daemon=True).start()

    def conn(self, c):
        t = self.ctx.wrap_socket(socket.create_connection(("127.0.0.1", TLS_PORT)),
                                 server_hostname="terminal.local")
        # Record the request body as it passes.
        first = c.recv(65536)
        while b"\r\n\r\n" not in first:
            first += c.recv(65536)
        head, _, body = first.partition(b"\r\n\r\n")
        n = int([l.split(b":")[1] for l in head.split(b"\r\n")
                 if l.lower().startswith(b"content-length")][0])
        while len(body) < n:
            body += c.recv(65536)
        path = head.split(b"\r\n")[0].split(b" ")[1].decode()
        self.bodies.append((path, body))
        t.sendall(first if len(first) == len(head) + 4 + n else head + b"\r\n\r\n" + body)
        pipe(c, t)

    def close(self):
        self.stop = True
        self.thread.join()
        self.sock.close()


def split_client(keylog, bodies):
    """Python ssl over memory BIOs: TLS 1.2 AES-128-GCM on one keep-alive connection,
    its records cut into 7-byte TCP segments during the handshake and the first
    request, and several records coalesced into one segment for the second."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.keylog_filename = keylog
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    ctx.set_ciphers("ECDHE-RSA-AES128-GCM-SHA256")
    inc, out = ssl.MemoryBIO(), ssl.MemoryBIO()
    obj = ctx.wrap_bio(inc, out, server_hostname="terminal.local")
    s = socket.create_connection(("127.0.0.1", TLS_PORT))
    s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

    def flush(chunk):
        data = out.read()
        for i in range(0, len(data), chunk or len(data) or 1):
            s.sendall(data[i:i + (chunk or len(data))])
            if chunk:
                time.sleep(0.002)

    def fill():
        d = s.recv(65536)
        if not d:
            raise EOFError
        inc.write(d)

    while True:
        try:
            obj.do_handshake()
            break
        except ssl.SSLWantReadError:
            flush(7)
            fill()
    flush(7)

    def request(path_body, chunk, split_writes):
        path, body = path_body
        head = (f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1:{TLS_PORT}\r\n"
                f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n").encode()
        if split_writes:  # one record per piece, all sent in one segment
            for piece in (head[:20], head[20:], body[:10], body[10:]):
                obj.write(piece)
        else:
            obj.write(head + body)
        flush(chunk)
        resp = b""
        while True:
            try:
                resp += obj.read(65536)
            except ssl.SSLWantReadError:
                fill()
                continue
            if b"\r\n\r\n" in resp:
                h, _, b = resp.partition(b"\r\n\r\n")
                n = int([l.split(b":")[1] for l in h.split(b"\r\n")
                         if l.lower().startswith(b"content-length")][0])
                if len(b) >= n:
                    return
    request(bodies[0], 7, False)
    request(bodies[1], 0, True)
    s.close()


def python_resume(keylog, bodies):
    """Python ssl, TLS 1.2: two connections, the second resuming the first's session
    with its session ticket (RFC 5077)."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    ctx.check_hostname = False
    ctx.verify_mode = ssl.CERT_NONE
    ctx.keylog_filename = keylog
    ctx.maximum_version = ssl.TLSVersion.TLSv1_2
    session = None
    for path, body in bodies:
        s = ctx.wrap_socket(socket.create_connection(("127.0.0.1", TLS_PORT)),
                            server_hostname="terminal.local", session=session)
        s.sendall((f"POST {path} HTTP/1.1\r\nHost: terminal.local:{TLS_PORT}\r\n"
                   f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
                   "Connection: close\r\n\r\n").encode() + body)
        while s.recv(65536):
            pass
        session = s.session
        assert session is not None and (path == bodies[0][0] or s.session_reused), "not resumed"
        s.close()


def s_client_keyupdate(keylog, bodies):
    """openssl s_client, TLS 1.3, one keep-alive connection: the payment; `K` (a
    KeyUpdate with update_requested, so the server updates its keys too); the
    inquiry under the new keys; `k` (a KeyUpdate, not requested: only the client's
    keys change); the payment again. s_client reads these command letters from
    stdin at the start of a line (not with -quiet or -ign_eof)."""
    p = subprocess.Popen(["openssl", "s_client", "-connect", f"127.0.0.1:{TLS_PORT}", "-tls1_3",
                          "-servername", "terminal.local", "-keylogfile", keylog],
                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    seen = []

    def read():
        for line in p.stdout:
            seen.append(line)
    reader = threading.Thread(target=read, daemon=True)
    reader.start()

    def answers():
        return b"".join(seen).count(b"HTTP/1.1 200 OK\r\n")

    def wait(n):
        for _ in range(200):
            if answers() >= n:
                return
            time.sleep(0.025)
        raise RuntimeError(f"s_client: no answer {n}: {b''.join(seen)[-500:]!r}")

    def request(path, body):
        p.stdin.write((f"POST {path} HTTP/1.1\r\nHost: terminal.local:{TLS_PORT}\r\n"
                       f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
                       ).encode() + body)
        p.stdin.flush()

    def command(letter):
        time.sleep(0.2)  # its own read() from stdin: command letters start a read
        p.stdin.write(letter + b"\n")
        p.stdin.flush()
        time.sleep(0.2)

    request(*bodies[0])
    wait(1)
    command(b"K")
    request(*bodies[1])
    wait(2)
    command(b"k")
    request(*bodies[0])
    wait(3)
    p.stdin.close()
    p.wait(timeout=10)
    reader.join(timeout=5)
    err = p.stderr.read()
    assert err.count(b"KEYUPDATE") == 2, err


def curl(keylog, bodies, *opts, close=False):
    args = ["curl", "-sS"]
    for i, (path, body) in enumerate(bodies):
        if i:
            args.append("--next")
        args += ["-k", "--http1.1", *opts, "-H", "Content-Type: application/json",
                 "--resolve", f"terminal.local:{TLS_PORT}:127.0.0.1",
                 "--data-binary", "@" + body, "-o", "/dev/null"]
        if close:
            args += ["-H", "Connection: close"]
        args.append(f"https://terminal.local:{TLS_PORT}{path}")
    env = dict(os.environ, SSLKEYLOGFILE=keylog)
    subprocess.run(args, check=True, env=env)


# name: (client, curl options, relay options)
T12 = ["--tls-max", "1.2", "--ciphers"]
T13 = ["--tlsv1.3", "--tls13-ciphers"]
SCENARIOS = {
    "tls12-ecdhe-rsa-aes128-gcm": ("curl", T12 + ["ECDHE-RSA-AES128-GCM-SHA256"], {}),
    "tls12-ecdhe-rsa-aes256-gcm-sha384": ("curl", T12 + ["ECDHE-RSA-AES256-GCM-SHA384"], {}),
    "tls12-ecdhe-rsa-chacha20-poly1305": ("curl", T12 + ["ECDHE-RSA-CHACHA20-POLY1305"], {}),
    "tls12-rsa-aes128-gcm": ("curl", T12 + ["AES128-GCM-SHA256"], {}),
    "tls12-rsa-aes128-cbc-sha-etm": ("curl", T12 + ["AES128-SHA"], {}),
    "tls12-rsa-aes256-cbc-sha256-etm": ("curl", T12 + ["AES256-SHA256"], {}),
    "tls12-ecdhe-rsa-aes256-cbc-sha384-etm": ("curl", T12 + ["ECDHE-RSA-AES256-SHA384"], {}),
    "tls12-ecdhe-rsa-aes128-cbc-sha-noetm": ("curl", T12 + ["ECDHE-RSA-AES128-SHA"], {"no_etm": True}),
    "tls12-rsa-aes256-cbc-sha256-noetm": ("curl", T12 + ["AES256-SHA256"], {"no_etm": True}),
    "tls13-aes128-gcm": ("curl", T13 + ["TLS_AES_128_GCM_SHA256"], {}),
    "tls13-aes256-gcm": ("curl", T13 + ["TLS_AES_256_GCM_SHA384"], {}),
    "tls13-chacha20-poly1305": ("curl", T13 + ["TLS_CHACHA20_POLY1305_SHA256"], {}),
    "tls12-resume-session-id": ("curl-close", T12 + ["ECDHE-RSA-AES128-GCM-SHA256"], {"no_ticket": True}),
    "tls12-resume-ticket": ("python-resume", [], {}),
    "tls13-resume-psk": ("curl-close", T13 + ["TLS_AES_128_GCM_SHA256"], {}),
    "python-send-tls13": ("bridge", [], {}),
    "python-split-records-tls12": ("split", [], {}),
    "tls13-keyupdate": ("s_client-keyupdate", [], {}),
}
DSB = "tls13-aes128-gcm"


def start_dump(path):
    err = tempfile.TemporaryFile()
    p = subprocess.Popen(["tcpdump", "-i", "lo", "-U", "--immediate-mode", "-Z", "root", "-n",
                          "-s", "0", "-w", path, f"tcp port {TLS_PORT} or tcp port {PLAIN_PORT}"],
                         stderr=err)
    for _ in range(100):
        err.seek(0)
        if b"listening" in err.read():
            break
        time.sleep(0.05)
    return p


def stop_dump(p):
    time.sleep(0.4)
    p.send_signal(2)
    p.wait()


def send(to, *args):
    subprocess.run([BIN, "send", "--to", to, "--key", KEY, "--format", "jsonl", "--timeout", "5",
                    *args], check=False, stdout=subprocess.DEVNULL)


def main():
    names = sys.argv[1:] or list(SCENARIOS)
    if "ECR_SNIFF" not in os.environ:
        run("cargo", "build", "--release", "-j2", "--quiet", cwd=ROOT)
    tmp = tempfile.mkdtemp()
    cert, key = os.path.join(tmp, "cert.pem"), os.path.join(tmp, "key.pem")
    run("openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", key, "-out", cert,
        "-days", "3650", "-subj", "/CN=ECR Terminal 127.0.0.1/O=ecr-sniff test",
        "-addext", "subjectAltName=IP:127.0.0.1", stderr=subprocess.DEVNULL)
    emu = subprocess.Popen([BIN, "emulate", "--key", KEY, "--http-port", str(PLAIN_PORT),
                            "--no-tcp"], stdout=subprocess.DEVNULL)
    time.sleep(0.5)
    try:
        # Request bodies made by `ecr-sniff send` (recorded through the bridge, not
        # captured), for the curl and split clients.
        relay = Relay(cert, key)
        bridge = Bridge(os.path.join(tmp, "warmup.keylog"))
        send(f"http://127.0.0.1:{BRIDGE_PORT}", "pay", "--amt", "12.30", "--channel", "wx",
             "--out-trade-no", "TLS-0001")
        send(f"http://127.0.0.1:{BRIDGE_PORT}", "inquiry", "--out-trade-no", "TLS-0001")
        bridge.close()
        relay.close()
        bodies = []
        for i, (path, b) in enumerate(bridge.bodies):
            p = os.path.join(tmp, f"body{i}.txt")
            open(p, "wb").write(b)
            bodies.append((path, p))
        assert len(bodies) == 2, bridge.bodies
        for name in names:
            client, opts, relay_opts = SCENARIOS[name]
            keylog = os.path.join(HERE, name + ".keylog")
            pcap = os.path.join(HERE, name + ".pcap")
            for f in (keylog, pcap):
                if os.path.exists(f):
                    os.remove(f)
            relay = Relay(cert, key, **relay_opts)
            dump = start_dump(pcap)
            if client == "curl":
                curl(keylog, bodies, *opts)
            elif client == "curl-close":
                curl(keylog, bodies, *opts, close=True)
            elif client == "bridge":
                bridge = Bridge(keylog)
                to = f"http://127.0.0.1:{BRIDGE_PORT}"
                send(to, "pay", "--amt", "45.60", "--channel", "alipay", "--out-trade-no", "TLS-0002")
                send(to, "summary")
                send(to, "refund", "--order-id", "TLS-0002", "--refund-amount", "45.60")
                bridge.close()
            elif client == "split":
                split_client(keylog, [(p, open(b, "rb").read()) for p, b in bodies])
            elif client == "s_client-keyupdate":
                s_client_keyupdate(keylog, [(p, open(b, "rb").read()) for p, b in bodies])
            elif client == "python-resume":
                python_resume(keylog, [(p, open(b, "rb").read()) for p, b in bodies])
            time.sleep(0.3)
            stop_dump(dump)
            relay.close()
            time.sleep(0.2)
            print("made", name)
        if DSB in names:
            run("editcap", "--inject-secrets", f"tls,{os.path.join(HERE, DSB + '.keylog')}",
                os.path.join(HERE, DSB + ".pcap"), os.path.join(HERE, DSB + "-dsb.pcapng"))
    finally:
        emu.terminate()
        emu.wait()
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
