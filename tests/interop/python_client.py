"""WebSocket client driver for tests/interop_python.rs, built on the
`websockets` library's asyncio client (websockets.asyncio.client, 13.0+).

The Rust test writes one JSON command per line on stdin; this script writes
one JSON event per line on stdout. Events of a connection come in the order
the library delivered them. The line protocol (the same as
tests/interop/node_client.mjs):

  start                                   -> {"event":"ready","library":..,"version":..}
  {"op":"open","id":ID,"url":URL}         -> {"id":ID,"event":"open"}
                                             or {"id":ID,"event":"error","error":TEXT}
  {"op":"send","id":ID,"text":T}          -> {"id":ID,"event":"sent"}
  {"op":"send","id":ID,"binary":BASE64}   -> {"id":ID,"event":"sent"}
  {"op":"pause","id":ID}                  -> {"id":ID,"event":"paused"}   (stop reading)
  {"op":"resume","id":ID}                 -> {"id":ID,"event":"resumed"}

and, after "open", for each message and at the end:

  {"id":ID,"event":"message","kind":"text"|"binary","len":N,"head":..,"data":..}
      (`head`: the first 256 characters; `data`: the whole text, only up
      to 8 KiB; binary messages are base64)
  {"id":ID,"event":"close","code":C,"reason":R}
      (the close frame the library received, as ConnectionClosed.rcvd
      reports it; code null when none was received)

Every wait is bounded: the handshake (5 s), each send (5 s), the closing
handshake (2 s), and the whole run (60 s, then exit 3).
"""

import asyncio
import base64
import json
import os
import sys

import websockets
from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed

DATA_MAX = 8192
LIFETIME_S = 60


def emit(event):
    sys.stdout.write(json.dumps(event) + "\n")
    sys.stdout.flush()


class Conn:
    def __init__(self, cid):
        self.cid = cid
        self.ws = None
        self.reading = asyncio.Event()
        self.reading.set()

    async def open(self, url):
        try:
            # No keepalive pings (ping_interval=None): the idle-timeout test
            # needs a client that sends nothing on its own.
            self.ws = await connect(
                url,
                open_timeout=5,
                ping_interval=None,
                close_timeout=2,
                max_size=None,
            )
        except Exception as e:  # refused upgrade, timeout, reset...
            emit({"id": self.cid, "event": "error", "error": repr(e)})
            return
        emit({"id": self.cid, "event": "open"})
        asyncio.get_running_loop().create_task(self.read())

    async def read(self):
        while True:
            await self.reading.wait()
            try:
                msg = await self.ws.recv()
            except ConnectionClosed as e:
                rcvd = e.rcvd
                emit(
                    {
                        "id": self.cid,
                        "event": "close",
                        "code": rcvd.code if rcvd else None,
                        "reason": rcvd.reason if rcvd else None,
                    }
                )
                return
            if isinstance(msg, str):
                text, kind = msg, "text"
            else:
                text, kind = base64.b64encode(msg).decode(), "binary"
            event = {
                "id": self.cid,
                "event": "message",
                "kind": kind,
                "len": len(msg),
                "head": text[:256],
            }
            if len(text) <= DATA_MAX:
                event["data"] = text
            emit(event)

    async def send(self, cmd):
        data = cmd["text"] if "text" in cmd else base64.b64decode(cmd["binary"])
        try:
            await asyncio.wait_for(self.ws.send(data), 5)
        except Exception as e:
            emit({"id": self.cid, "event": "error", "error": repr(e)})
            return
        emit({"id": self.cid, "event": "sent"})


async def main():
    loop = asyncio.get_running_loop()
    loop.call_later(LIFETIME_S, lambda: os._exit(3))
    conns = {}
    emit({"event": "ready", "library": "websockets", "version": websockets.__version__})
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line:
            return
        if not line.strip():
            continue
        cmd = json.loads(line)
        op, cid = cmd["op"], cmd["id"]
        if op == "open":
            conns[cid] = Conn(cid)
            loop.create_task(conns[cid].open(cmd["url"]))
        elif op == "send":
            loop.create_task(conns[cid].send(cmd))
        elif op == "pause":
            conns[cid].reading.clear()
            emit({"id": cid, "event": "paused"})
        elif op == "resume":
            conns[cid].reading.set()
            emit({"id": cid, "event": "resumed"})
        else:
            emit({"id": cid, "event": "error", "error": f"unknown op {op!r}"})


if __name__ == "__main__":
    asyncio.run(main())
