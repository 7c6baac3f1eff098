#!/usr/bin/env python3
"""Control-socket push throughput, with and without the mailbox and --data-dir.

Starts target/release/wspush three times (no mailbox; --mailbox 100;
--mailbox 100 --data-dir TMP), sends 20,000 pushes to 100 offline users in
batches of 100 pipelined lines (and 2,000 pushes one request at a time),
and prints the median of 3 runs in pushes per second. Loopback only,
bounded in count. Run `cargo build --release` first; set WSPUSH_BIN to
measure another build (e.g. the previous commit's) side by side.
"""
import json
import os
import socket
import subprocess
import tempfile
import time

BIN = os.environ.get("WSPUSH_BIN") or os.path.join(
    os.path.dirname(__file__), "..", "target", "release", "wspush")


def run(extra, n, batch):
    d = tempfile.mkdtemp()
    sock = os.path.join(d, "s.sock")
    p = subprocess.Popen([BIN, "serve", "--listen", "127.0.0.1:0", "--control", sock] + extra,
                         stdout=subprocess.PIPE, stderr=subprocess.DEVNULL)
    try:
        p.stdout.readline()  # the "listening" line
        s = socket.socket(socket.AF_UNIX)
        s.connect(sock)
        replies = s.makefile("rb")
        started = time.time()
        for i in range(0, n, batch):
            lines = (json.dumps({"op": "push", "users": ["u%d" % (j % 100)], "content": {"i": j}}).encode() + b"\n"
                     for j in range(i, i + batch))
            s.sendall(b"".join(lines))
            for _ in range(batch):
                replies.readline()
        return n / (time.time() - started)
    finally:
        p.terminate()
        p.wait()


def main():
    for n, batch, how in [(20000, 100, "batches of 100 pipelined lines"), (2000, 1, "one request at a time")]:
        for extra, name in [([], "no mailbox"), (["--mailbox", "100"], "mailbox in memory"),
                            (["--mailbox", "100", "--data-dir", tempfile.mkdtemp()], "mailbox + --data-dir")]:
            rates = sorted(run(extra, n, batch) for _ in range(3))
            print(f"{name}, {how}: median {rates[1]:.0f} pushes/s")


if __name__ == "__main__":
    main()
