"""A Python `websockets` push server (one thread: the asyncio loop) speaking
the control subset of wspush-floor, for tools/compare: WebSocket on
/push/{token}; a Unix control socket of JSON lines where "grant" (and
anything else) answers {"ok":true}, "stats" the connection count, and
"push" broadcasts wspush's envelope ({"messageId","seq","content","ts"},
one text frame, with websockets.broadcast) to every open connection, then
answers {"ok":true,"seq":S,"delivered":N}.

    PYTHONPATH=DIR python3 server.py --port 7006 --control ./p.sock
"""

import argparse
import asyncio
import json
import os
import sys
import time

from websockets.asyncio.server import broadcast, serve
from websockets.protocol import State

CONNS = set()
SEQ = 0


async def handler(ws):
    CONNS.add(ws)
    try:
        async for _ in ws:
            pass
    except Exception:
        pass
    finally:
        CONNS.discard(ws)


def process_request(connection, request):
    if not request.path.startswith("/push/"):
        return connection.respond(404, "not found\n")
    return None


def push(content):
    global SEQ
    SEQ += 1
    data = json.dumps(
        {"messageId": f"f100-{SEQ}", "seq": SEQ, "content": content,
         "ts": int(time.time() * 1000)},
        separators=(",", ":"),
    )
    open_conns = [c for c in CONNS if c.state is State.OPEN]
    broadcast(open_conns, data)
    return {"ok": True, "seq": SEQ, "delivered": len(open_conns), "queued": 0}


def answer(line):
    try:
        req = json.loads(line)
    except ValueError:
        req = None
    op = req.get("op") if isinstance(req, dict) else None
    if op == "push":
        return push(req.get("content"))
    if op == "stats":
        return {"ok": True, "connections": len(CONNS)}
    return {"ok": True}


async def control_client(reader, writer):
    try:
        while True:
            line = await reader.readline()
            if not line:
                break
            line = line.strip()
            if line:
                writer.write(json.dumps(answer(line), separators=(",", ":")).encode() + b"\n")
                await writer.drain()
    except (ConnectionError, asyncio.LimitOverrunError, ValueError):
        pass
    finally:
        writer.close()


async def main():
    p = argparse.ArgumentParser()
    p.add_argument("--port", type=int, default=7006)
    p.add_argument("--control", default="./python-websockets.sock")
    args = p.parse_args()
    try:
        os.unlink(args.control)
    except FileNotFoundError:
        pass
    ctl = await asyncio.start_unix_server(control_client, args.control, limit=1 << 20)
    async with serve(handler, "127.0.0.1", args.port, process_request=process_request,
                     compression=None, ping_interval=None):
        print(f"python websockets peer: listening on ws://127.0.0.1:{args.port}, "
              f"control socket {args.control}", flush=True)
        async with ctl:
            await asyncio.Future()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except OSError as e:
        print(f"python websockets peer: {e}", file=sys.stderr)
        sys.exit(1)
