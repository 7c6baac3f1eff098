// The client against a real wspush server, driven by tests/js_client.rs:
//
//   node [--experimental-websocket] tools/client/test/live.mjs WS_URL TOKEN USER
//
// WS_URL is the ws path URL (ws://127.0.0.1:PORT/push); TOKEN is granted to
// USER with the topics ["dev/*"] on a server started with --mailbox,
// --data-dir and --topics-default none.
//
// Line protocol, one line each way per step:
//   stdout  NEED {"control": REQUEST}   the test sends REQUEST on the control socket
//           NEED {"server": "stop"}     SIGTERM the server (it closes us with 1001)
//           NEED {"server": "start"}    start it again on the same port and data dir
//   stdin   the reply, one JSON line ({"ok":true} for the server steps)
//   stdout  LOG ...  (progress), then PASS, or FAIL and the reason (exit 1)
//
// Every wait is bounded. Without arguments (as under `node --test
// tools/client/test/`) it only registers a skipped test.

import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createInterface } from 'node:readline';
import { WspushClient } from '../wspush.js';

const [url, token, user] = process.argv.slice(2);

const STEP_MS = 5000;

function sleep(ms) {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** `promise`, or a failure naming `what` after `ms`. */
async function within(what, promise, ms = STEP_MS) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms: ${what}`)), ms);
  });
  try {
    return await Promise.race([promise, timeout]);
  } finally {
    clearTimeout(timer);
  }
}

/** Poll `check` until it returns something truthy; that value. */
async function until(what, check, ms = STEP_MS) {
  const deadline = Date.now() + ms;
  for (;;) {
    const value = check();
    if (value) return value;
    if (Date.now() > deadline) throw new Error(`timed out after ${ms} ms: ${what}`);
    await sleep(10);
  }
}

function log(text) {
  console.log(`LOG ${text}`);
}

// -- talking to the Rust side --------------------------------------------------

const replies = [];
let replyWaiter = null;
let input = null;

/** Read the Rust side's replies from stdin (only when run by it). */
function listen() {
  input = createInterface({ input: process.stdin });
  input.on('line', (line) => {
    if (replyWaiter) {
      const resolve = replyWaiter;
      replyWaiter = null;
      resolve(line);
    } else {
      replies.push(line);
    }
  });
}

async function need(request) {
  console.log(`NEED ${JSON.stringify(request)}`);
  const line = await within(
    `the reply to ${JSON.stringify(request)}`,
    new Promise((resolve) => (replies.length ? resolve(replies.shift()) : (replyWaiter = resolve))),
    20_000,
  );
  return JSON.parse(line);
}

const control = (request) => need({ control: request });

// -- the run ---------------------------------------------------------------------

async function main() {
  listen();
  const urls = [];
  class RecordingWebSocket extends globalThis.WebSocket {
    constructor(target, protocols) {
      super(target, protocols);
      urls.push(target);
    }
  }

  // The token function holds reconnection attempts while `gate` is set, so
  // that a message can be pushed while the client is surely disconnected.
  let gate = null;
  const tokenReasons = [];
  const client = new WspushClient({
    url,
    token: async (reason) => {
      tokenReasons.push(reason);
      if (gate && reason !== 'connect') await gate.promise;
      return token;
    },
    device: 'live test',
    minDelay: 100,
    maxDelay: 400,
    heartbeat: 1000,
    WebSocket: RecordingWebSocket,
  });
  const messages = [];
  const states = [];
  const resets = [];
  const errors = [];
  client.on('message', (m) => messages.push(m));
  client.on('state', (s) => states.push(s));
  client.on('reset', (r) => resets.push(r));
  client.on('error', (e) => errors.push(e));
  const received = (messageId) => messages.filter((m) => m.messageId === messageId);
  const arrives = (what, reply) =>
    until(what, () => received(reply.messageId)[0]);
  const device = 'device=live%20test';
  // Frames of one connection are handled in order: once this reply is in,
  // everything sent before it has been applied by the server.
  const sync = () => within('a sync reply', client.unsubscribe('dev/sync'));

  // 1. Connect and receive a user push.
  client.connect();
  await until('open', () => client.state === 'open');
  assert.equal(urls[0], `${url}/${token}?${device}`);
  let reply = await control({ op: 'push', users: [user], content: { step: 'first' } });
  assert.equal(reply.delivered, 1, JSON.stringify(reply));
  const first = await arrives('the first push', reply);
  assert.equal(first.seq, reply.seq);
  assert.deepEqual(first.content, { step: 'first' });
  log(`user push received, seq ${first.seq}`);

  // 2. A topic: the ack resolves subscribe(), then a publish arrives.
  await within('subscribe dev/42', client.subscribe('dev/42'));
  assert.deepEqual([...client.topics], ['dev/42']);
  reply = await control({ op: 'publish', topic: 'dev/42', content: 'hello' });
  assert.equal(reply.delivered, 1, JSON.stringify(reply));
  const published = await arrives('the publish', reply);
  assert.equal(published.topic, 'dev/42');
  assert.equal(published.content, 'hello');
  log('topic subscribed and publish received');

  // 3. A topic the token does not allow.
  await assert.rejects(within('subscribe secret/1', client.subscribe('secret/1')), {
    message: 'topic not allowed',
  });
  assert.equal(client.topics.has('secret/1'), false);
  log('disallowed topic rejected');

  // 4. pause() stops deliveries, resume() restores them.
  client.pause();
  await sync();
  reply = await control({ op: 'push', users: [user], content: { step: 'paused' } });
  assert.equal(reply.delivered, 0, JSON.stringify(reply));
  assert.equal(reply.queued, 0, JSON.stringify(reply));
  await sleep(200);
  assert.equal(received(reply.messageId).length, 0);
  client.resume();
  await sync();
  reply = await control({ op: 'push', users: [user], content: { step: 'resumed' } });
  assert.equal(reply.delivered, 1, JSON.stringify(reply));
  await arrives('the push after resume()', reply);
  log('pause and resume work');

  // 5. A restart: held while disconnected, delivered once after ?since=.
  const before = client.lastSeq;
  const socketsBefore = urls.length;
  let release;
  gate = { promise: new Promise((resolve) => (release = resolve)) };
  await need({ server: 'stop' });
  await until('waiting after 1001', () =>
    states.find((s) => s.state === 'waiting' && s.code === 1001),
  );
  await until('the gated token request', () => tokenReasons.includes('reconnect'));
  await need({ server: 'start' });
  reply = await control({ op: 'push', users: [user], content: { step: 'held' } });
  assert.equal(reply.queued, 1, JSON.stringify(reply));
  assert.equal(reply.delivered, 0, JSON.stringify(reply));
  gate = null;
  release();
  await until('open again', () => client.state === 'open' && urls.length > socketsBefore, 10_000);
  assert.equal(urls.at(-1), `${url}/${token}?since=${before}&${device}`);
  const held = await arrives('the held message', reply);
  assert.ok(held.seq > before, `held seq ${held.seq} above ${before}`);
  await sync(); // the re-subscribe to dev/42 went before it
  const again = await control({ op: 'publish', topic: 'dev/42', content: 'again' });
  assert.equal(again.delivered, 1, `re-subscribed after the restart: ${JSON.stringify(again)}`);
  await arrives('the publish after the restart', again);
  await sleep(300);
  assert.equal(received(reply.messageId).length, 1, 'the held message arrived once');
  assert.deepEqual(resets, []);
  log(`reconnected with since=${before}; held message seq ${held.seq} arrived once`);

  // 6. Revoking the token: rejected, and no attempt afterwards.
  reply = await control({ op: 'revoke', token });
  assert.equal(reply.closed, 1, JSON.stringify(reply));
  const rejected = await until('rejected', () => states.find((s) => s.state === 'rejected'));
  assert.equal(rejected.code, 4401);
  assert.equal(rejected.reason, 'token revoked');
  const attempts = client.attempts;
  const sockets = urls.length;
  await sleep(1000); // ten times minDelay
  assert.equal(client.state, 'rejected');
  assert.equal(client.attempts, attempts);
  assert.equal(urls.length, sockets);
  log(`rejected with 4401 after ${attempts} attempts; none since`);

  client.close();
  assert.equal(client.state, 'closed');
  assert.deepEqual(
    errors.map((e) => e.message),
    [],
  );
  input.close();
}

// -- entry point (last, once every declaration above is initialised) ------------

if (!url || !token || !user) {
  test.skip('live run against a real server (tests/js_client.rs passes WS_URL TOKEN USER)');
} else {
  main().then(
    () => {
      console.log('PASS');
      process.exit(0);
    },
    (error) => {
      console.log(`FAIL ${error?.stack ?? error}`);
      process.exit(1);
    },
  );
}
