"""Server and client for make_fixtures.sh (see there)."""
import socket
import sys
import time

ADDR = ("127.0.0.1", 9001)
BODIES = [b'{"func_type":1001,"amt":"100"}', b'{"func_type":1002}', b'{"func_type":1003,"x":"' + b"y" * 40 + b'"}']


def request(body):
    return (b"POST /api/payment HTTP/1.1\r\nHost: 127.0.0.1:9001\r\nContent-Type: application/json\r\n"
            b"Content-Length: " + str(len(body)).encode() + b"\r\n\r\n" + body)


def responses():
    yield b'HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: 17\r\n\r\n{"respcd":"0000"}'
    yield (b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
           b"6\r\n{\"resp\r\n9\r\ncd\":\"6000\r\n2\r\n\"}\r\n0\r\n\r\n")
    yield b'HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok'


def server():
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind(ADDR)
    s.listen(1)
    c, _ = s.accept()
    buf = b""
    answers = responses()
    done = 0
    while done < 3:
        data = c.recv(65536)
        if not data:
            break
        buf += data
        while b"\r\n\r\n" in buf:
            head, rest = buf.split(b"\r\n\r\n", 1)
            length = int([l for l in head.split(b"\r\n") if l.lower().startswith(b"content-length")][0].split(b":")[1])
            if len(rest) < length:
                break
            buf = rest[length:]
            c.sendall(next(answers))
            done += 1
    time.sleep(0.2)
    c.close()


def client():
    c = socket.create_connection(ADDR)
    c.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    c.sendall(request(BODIES[0]) + request(BODIES[1]))
    time.sleep(0.2)
    r = request(BODIES[2])
    for i in range(0, len(r), 7):
        c.sendall(r[i:i + 7])
        time.sleep(0.005)
    got = b""
    while True:
        d = c.recv(65536)
        if not d:
            break
        got += d
    c.close()
    sys.stdout.write("client got %d bytes\n" % len(got))


if __name__ == "__main__":
    {"server": server, "client": client}[sys.argv[1]]()
