// WebSocket client driver for tests/interop_node.rs, built on the `ws`
// library (its WebSocket client class). `ws` is loaded with require(), so
// NODE_PATH may point at a private node_modules folder (the test sets it
// to target/node/node_modules).
//
// The Rust test writes one JSON command per line on stdin; this script
// writes one JSON event per line on stdout, in the order `ws` emitted
// them. The line protocol is the one of tests/interop/python_client.py:
//
//   start                                   -> {"event":"ready","library":"ws","version":..}
//   {"op":"open","id":ID,"url":URL}         -> {"id":ID,"event":"open"}
//                                              or {"id":ID,"event":"error","error":TEXT}
//   {"op":"send","id":ID,"text":T}          -> {"id":ID,"event":"sent"}
//   {"op":"send","id":ID,"binary":BASE64}   -> {"id":ID,"event":"sent"}
//   {"op":"pause","id":ID}                  -> {"id":ID,"event":"paused"}   (stop reading)
//   {"op":"resume","id":ID}                 -> {"id":ID,"event":"resumed"}
//
// and, after "open", for each message and at the end:
//
//   {"id":ID,"event":"message","kind":"text"|"binary","len":N,"head":..,"data":..}
//       (`head`: the first 256 characters; `data`: the whole text, only up
//       to 8 KiB; binary messages are base64)
//   {"id":ID,"event":"close","code":C,"reason":R}
//       (the code and reason of ws's "close" event; 1006 when no close
//       frame was received)
//
// Every wait is bounded: the handshake (5 s), each send (5 s), the closing
// handshake (ws's own 30 s close timer is cut short by the test ending),
// and the whole run (60 s, then exit 3).

import { createRequire } from "node:module";
import { createInterface } from "node:readline";

const require = createRequire(import.meta.url);
const WebSocket = require("ws");
const { version } = require("ws/package.json");

const DATA_MAX = 8192;
const LIFETIME_MS = 60_000;

setTimeout(() => process.exit(3), LIFETIME_MS).unref();

function emit(event) {
  process.stdout.write(JSON.stringify(event) + "\n");
}

const conns = new Map();

function open(id, url) {
  // ws sends no pings of its own (it only answers the server's), so the
  // idle-timeout test sees a client that sends nothing by itself.
  const ws = new WebSocket(url, { handshakeTimeout: 5000 });
  conns.set(id, ws);
  let opened = false;
  ws.on("open", () => {
    opened = true;
    emit({ id, event: "open" });
  });
  ws.on("message", (data, isBinary) => {
    const text = isBinary ? data.toString("base64") : data.toString("utf8");
    const event = {
      id,
      event: "message",
      kind: isBinary ? "binary" : "text",
      len: isBinary ? data.length : text.length,
      head: text.slice(0, 256),
    };
    if (text.length <= DATA_MAX) event.data = text;
    emit(event);
  });
  ws.on("error", (err) => {
    if (!opened) emit({ id, event: "error", error: String(err) });
  });
  ws.on("close", (code, reason) => {
    if (opened) emit({ id, event: "close", code, reason: reason.toString("utf8") });
  });
}

function send(id, cmd) {
  const ws = conns.get(id);
  const data = "text" in cmd ? cmd.text : Buffer.from(cmd.binary, "base64");
  let done = false;
  const timer = setTimeout(() => {
    if (!done) emit({ id, event: "error", error: "send timed out" });
    done = true;
  }, 5000);
  ws.send(data, { binary: !("text" in cmd) }, (err) => {
    clearTimeout(timer);
    if (done) return;
    done = true;
    emit(err ? { id, event: "error", error: String(err) } : { id, event: "sent" });
  });
}

emit({ event: "ready", library: "ws", version });

const rl = createInterface({ input: process.stdin });
rl.on("line", (line) => {
  if (!line.trim()) return;
  const cmd = JSON.parse(line);
  const { op, id } = cmd;
  if (op === "open") {
    open(id, cmd.url);
  } else if (op === "send") {
    send(id, cmd);
  } else if (op === "pause") {
    conns.get(id).pause();
    emit({ id, event: "paused" });
  } else if (op === "resume") {
    conns.get(id).resume();
    emit({ id, event: "resumed" });
  } else {
    emit({ id, event: "error", error: `unknown op ${op}` });
  }
});
rl.on("close", () => process.exit(0));
