#!/usr/bin/env python3
"""Pushes per second over the HTTP API (keep-alive) next to the control socket.

Starts target/release/wspush once with --api-key-file, then for each of
the control socket and HTTP sends pushes to 100 offline users, pipelined
in batches of 100 requests and one request at a time, on one connection;
prints the median of 3 runs in pushes per second and the server's CPU
time per push (from /proc/PID/stat). Loopback only, bounded in count. Run
`cargo build --release` first; WSPUSH_BIN selects another build.
"""
import json
import os
import socket
import subprocess
import tempfile
import time

BIN = os.environ.get("WSPUSH_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "target", "release", "wspush")
KEY = "throughput-test-key-0123456789"
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid):
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def body(j):
    return json.dumps({"users": ["u%d" % (j % 100)], "content": {"i": j}}).encode()


def control_batch(sock, replies, first, batch):
    lines = b"".join(b'{"op":"push",' + body(j)[1:] + b"\n" for j in range(first, first + batch))
    sock.sendall(lines)
    for _ in range(batch):
        replies.readline()


def http_batch(sock, replies, first, batch):
    out = []
    for j in range(first, first + batch):
        b = body(j)
        out.append(b"POST /api/push HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer " + KEY.encode() +
                   b"\r\nContent-Type: application/json\r\nContent-Length: " + str(len(b)).encode() +
                   b"\r\n\r\n" + b)
    sock.sendall(b"".join(out))
    for _ in range(batch):
        length = 0
        while True:
            line = replies.readline()
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
            if line == b"\r\n":
                break
        replies.read(length)


def run(pid, connect, send, n, batch):
    sock = connect()
    replies = sock.makefile("rb")
    cpu = cpu_seconds(pid)
    started = time.time()
    for i in range(0, n, batch):
        send(sock, replies, i, batch)
    elapsed = time.time() - started
    used = cpu_seconds(pid) - cpu
    sock.close()
    return n / elapsed, used / n * 1e6


def main():
    d = tempfile.mkdtemp()
    path = os.path.join(d, "api.key")
    with open(path, "w") as f:
        f.write(KEY + "\n")
    ctl = os.path.join(d, "s.sock")
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--control", ctl,
                          "--api-key-file", path],
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        banner = p.stdout.readline().decode()
        host, port = banner.split("ws://")[1].split(",")[0].rsplit(":", 1)

        def tcp():
            s = socket.create_connection((host, int(port)))
            s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            return s

        def unix():
            s = socket.socket(socket.AF_UNIX)
            s.connect(ctl)
            return s

        for n, batch, how in [(20000, 100, "pipelined, batches of 100"), (4000, 1, "one request at a time")]:
            for name, connect, send in [("control socket", unix, control_batch), ("HTTP keep-alive", tcp, http_batch)]:
                runs = sorted(run(p.pid, connect, send, n, batch) for _ in range(3))
                rate, cpu = runs[1]
                print(f"{name}, {how}: median {rate:,.0f} pushes/s, server CPU {cpu:.1f} us per push")
    finally:
        p.terminate()
        p.wait()


if __name__ == "__main__":
    main()
