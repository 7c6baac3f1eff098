'use strict';
// A Node `ws` push server (one thread: Node's event loop) speaking the
// control subset of wspush-floor, for tools/compare: WebSocket on
// /push/{token}; a Unix control socket of JSON lines where "grant" (and
// anything else) answers {"ok":true}, "stats" the connection count, and
// "push" sends wspush's envelope ({"messageId","seq","content","ts"}, one
// text frame, encoded once) to every open connection, then answers
// {"ok":true,"seq":S,"delivered":N}.
//
//   NODE_PATH=DIR/node_modules node server.js --port 7005 --control ./n.sock
const fs = require('fs');
const http = require('http');
const net = require('net');
const { WebSocketServer, WebSocket } = require('ws');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i > 0 && i + 1 < process.argv.length ? process.argv[i + 1] : dflt;
}
const port = Number(arg('--port', '7005'));
const control = arg('--control', './node-ws.sock');

const wss = new WebSocketServer({ noServer: true, perMessageDeflate: false });
const server = http.createServer((req, res) => {
  res.writeHead(404);
  res.end();
});
server.on('upgrade', (req, socket, head) => {
  if (!req.url.startsWith('/push/')) {
    socket.destroy();
    return;
  }
  wss.handleUpgrade(req, socket, head, () => {});
});

let seq = 0;
function push(content) {
  seq += 1;
  const data = Buffer.from(JSON.stringify({
    messageId: `f100-${seq}`, seq, content: content === undefined ? null : content, ts: Date.now(),
  }));
  let n = 0;
  for (const c of wss.clients) {
    if (c.readyState === WebSocket.OPEN) {
      c.send(data, { binary: false });
      n += 1;
    }
  }
  return { ok: true, seq, delivered: n, queued: 0 };
}

function answer(line) {
  let req = null;
  try { req = JSON.parse(line); } catch (e) { req = null; }
  const op = req && req.op;
  if (op === 'push') return push(req.content);
  if (op === 'stats') return { ok: true, connections: wss.clients.size };
  return { ok: true };
}

try { fs.unlinkSync(control); } catch (e) { /* not there */ }
const ctl = net.createServer((sock) => {
  let input = '';
  sock.setEncoding('utf8');
  sock.on('data', (chunk) => {
    input += chunk;
    let out = '';
    let end;
    while ((end = input.indexOf('\n')) >= 0) {
      const line = input.slice(0, end).trim();
      input = input.slice(end + 1);
      if (line) out += JSON.stringify(answer(line)) + '\n';
    }
    if (out) sock.write(out);
  });
  sock.on('error', () => {});
});
const fail = (e) => { console.error(`node ws peer: ${e.message}`); process.exit(1); };
ctl.on('error', fail);
server.on('error', fail);
ctl.listen(control, () => {
  server.listen(port, '127.0.0.1', () => {
    console.log(`node ws peer: listening on ws://127.0.0.1:${port}, control socket ${control}`);
  });
});
