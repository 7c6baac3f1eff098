// Unit tests of tools/client/wspush.js under Node's built-in test runner:
//   node --test tools/client/test/
// A fake WebSocket class records what the client sends and lets a test play
// the server (open, frames, close codes); a fake clock runs the timers.

import { describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { WspushClient, MAX_PENDING, SEEN_IDS, STABLE_AFTER_MS } from '../wspush.js';

// -- fakes ---------------------------------------------------------------------

/** Timers that run only when the test advances the clock. */
function fakeClock() {
  let now = 0;
  let nextId = 1;
  const timers = new Map();
  return {
    now: () => now,
    setTimeout(fn, ms) {
      const id = nextId++;
      timers.set(id, { at: now + ms, fn });
      return id;
    },
    clearTimeout(id) {
      timers.delete(id);
    },
    /** Timers scheduled and not yet run or cleared. */
    get pending() {
      return timers.size;
    },
    /** Move time forward by `ms`, running every timer that falls due, in order. */
    advance(ms) {
      const end = now + ms;
      for (;;) {
        let due = null;
        for (const [id, timer] of timers) {
          if (timer.at <= end && (due === null || timer.at < due[1].at)) due = [id, timer];
        }
        if (due === null) break;
        timers.delete(due[0]);
        now = due[1].at;
        due[1].fn();
      }
      now = end;
    },
  };
}

/** A WebSocket class whose instances the test drives as the server. */
function fakeWebSocketClass() {
  const sockets = [];
  class FakeWebSocket {
    constructor(url) {
      this.url = url;
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      sockets.push(this);
    }
    send(data) {
      if (this.readyState !== 1) throw new Error('send on a socket that is not open');
      this.sent.push(data);
    }
    close(code, reason) {
      this.closedWith = { code, reason };
      this.readyState = 2;
    }
    // The server's side:
    accept() {
      this.readyState = 1;
      this.onopen?.({ type: 'open' });
    }
    deliver(value) {
      const data = typeof value === 'string' ? value : JSON.stringify(value);
      this.onmessage?.({ type: 'message', data });
    }
    hangUp(code, reason = '') {
      this.readyState = 3;
      this.onclose?.({ type: 'close', code, reason });
    }
  }
  return { FakeWebSocket, sockets };
}

/** A client wired to fakes, plus everything it emitted. */
function setup(options = {}) {
  const clock = fakeClock();
  const { FakeWebSocket, sockets } = fakeWebSocketClass();
  const client = new WspushClient({
    url: 'ws://server.test/push',
    token: 'tok',
    WebSocket: FakeWebSocket,
    setTimeout: clock.setTimeout,
    clearTimeout: clock.clearTimeout,
    now: clock.now,
    random: () => 0.5,
    ...options,
  });
  const seen = { states: [], messages: [], resets: [], errors: [] };
  client.on('state', (e) => seen.states.push(e));
  client.on('message', (m) => seen.messages.push(m));
  client.on('reset', (r) => seen.resets.push(r));
  client.on('error', (e) => seen.errors.push(e));
  const h = {
    client,
    clock,
    sockets,
    ...seen,
    get socket() {
      return sockets.at(-1);
    },
    get lastState() {
      return seen.states.at(-1);
    },
    /** connect() and accept the first socket. */
    open() {
      client.connect();
      h.socket.accept();
      return h.socket;
    },
    /** Drop the current connection with `code` and accept the next one. */
    reconnect(code = 1006) {
      h.socket.hangUp(code);
      assert.equal(client.state, 'waiting');
      clock.advance(h.lastState.delay);
      h.socket.accept();
      return h.socket;
    },
  };
  return h;
}

function envelope(seq, extra = {}) {
  return { messageId: `ab12-${seq}`, seq, content: { n: seq }, ts: 1_700_000_000_000 + seq, ...extra };
}

const flush = () => new Promise((resolve) => setImmediate(resolve));

/** Fail, rather than hang, when `promise` is still pending after the queued work ran. */
async function settled(promise) {
  const pending = Symbol('pending');
  const result = await Promise.race([
    promise.then(
      (value) => ({ value }),
      (error) => ({ error }),
    ),
    flush().then(() => pending),
  ]);
  if (result === pending) assert.fail('the promise is still pending');
  return result;
}

async function resolvesSoon(promise) {
  const { error, value } = await settled(promise);
  if (error) assert.fail(`rejected: ${error.message}`);
  return value;
}

async function rejectsSoon(promise, expected) {
  const { error } = await settled(promise);
  assert.ok(error, 'the promise resolved');
  if (expected instanceof RegExp) assert.match(error.message, expected);
  else assert.equal(error.message, expected.message);
}

// -- back-off ------------------------------------------------------------------

describe('back-off', () => {
  test('doubles from minDelay up to maxDelay, waiting cap/2 + random*cap/2', () => {
    const randoms = [0, 0.5, 0.999, 0, 0.25, 0, 0.999, 0];
    const h = setup({ minDelay: 500, maxDelay: 30_000, random: () => randoms.shift() });
    h.client.connect();
    const delays = [];
    for (let i = 0; i < 8; i++) {
      const count = h.sockets.length;
      h.socket.hangUp(1006);
      const { delay } = h.lastState;
      delays.push(delay);
      h.clock.advance(delay - 1);
      assert.equal(h.sockets.length, count, 'no attempt before the delay is over');
      h.clock.advance(1);
      assert.equal(h.sockets.length, count + 1, 'an attempt once the delay is over');
    }
    const caps = [500, 1000, 2000, 4000, 8000, 16_000, 30_000, 30_000];
    const jitter = [0, 0.5, 0.999, 0, 0.25, 0, 0.999, 0];
    assert.deepEqual(
      delays,
      caps.map((cap, i) => cap / 2 + (jitter[i] * cap) / 2),
    );
  });

  test('every delay lies in [cap/2, cap)', () => {
    for (const r of [0, 0.3, 0.999_999]) {
      const h = setup({ minDelay: 100, maxDelay: 1000, random: () => r });
      h.client.connect();
      for (let n = 0; n < 6; n++) {
        h.socket.hangUp(1006);
        const cap = Math.min(1000, 100 * 2 ** n);
        const { delay } = h.lastState;
        assert.ok(delay >= cap / 2 && delay < cap, `delay ${delay} for cap ${cap}`);
        h.clock.advance(delay);
      }
    }
  });

  test('waiting events count the failures in a row', () => {
    const h = setup();
    h.client.connect();
    const attempts = [];
    for (let i = 0; i < 3; i++) {
      h.socket.hangUp(1006);
      attempts.push(h.lastState.attempt);
      h.clock.advance(h.lastState.delay);
      assert.equal(h.lastState.state, 'connecting');
      assert.equal(h.lastState.attempt, attempts.at(-1));
    }
    assert.deepEqual(attempts, [1, 2, 3]);
    assert.equal(h.client.attempts, 4);
  });

  test('a connection open at least 10 s resets the count; a shorter one does not', () => {
    const h = setup({ minDelay: 1000, maxDelay: 60_000, random: () => 0 });
    h.client.connect();
    for (let i = 0; i < 3; i++) {
      h.socket.hangUp(1006);
      h.clock.advance(h.lastState.delay);
    }
    // Three failures so far: a short-lived connection is the fourth.
    h.socket.accept();
    h.clock.advance(STABLE_AFTER_MS - 1);
    h.socket.hangUp(4000);
    assert.equal(h.lastState.delay, 8000 / 2);
    assert.equal(h.lastState.attempt, 4);
    h.clock.advance(h.lastState.delay);
    // This one stays long enough: the next wait starts from minDelay again.
    h.socket.accept();
    h.clock.advance(STABLE_AFTER_MS);
    h.socket.hangUp(1001);
    assert.equal(h.lastState.delay, 1000 / 2);
    assert.equal(h.lastState.attempt, 1);
  });

  test('connect() after a stop starts the count again', () => {
    const h = setup({ minDelay: 1000, random: () => 0 });
    h.client.connect();
    for (let i = 0; i < 3; i++) {
      h.socket.hangUp(1006);
      h.clock.advance(h.lastState.delay);
    }
    h.socket.accept();
    h.socket.hangUp(1008, 'kicked');
    assert.equal(h.client.state, 'stopped');
    h.client.connect();
    h.socket.hangUp(1006);
    assert.equal(h.lastState.delay, 500);
  });
});

// -- URL -------------------------------------------------------------------------

describe('connection URL', () => {
  test('token appended verbatim, device percent-encoded, no since before a message', () => {
    const h = setup({ token: 'a%20b', device: 'my dash/1' });
    h.client.connect();
    assert.equal(h.socket.url, 'ws://server.test/push/a%20b?device=my%20dash%2F1');
  });

  test('a trailing slash of url is dropped', () => {
    const h = setup({ url: 'ws://server.test/push/' });
    h.client.connect();
    assert.equal(h.socket.url, 'ws://server.test/push/tok');
  });

  test('since=LASTSEQ on every connection after a message', () => {
    const h = setup({ device: 'd' });
    h.open();
    h.socket.deliver(envelope(41));
    h.socket.deliver(envelope(42));
    h.reconnect(1006);
    assert.equal(h.socket.url, 'ws://server.test/push/tok?since=42&device=d');
    h.socket.deliver(envelope(50));
    h.reconnect(1001);
    assert.equal(h.socket.url, 'ws://server.test/push/tok?since=50&device=d');
  });

  test('the since option is used from the first connection (0 included)', () => {
    assert.equal(setup({ since: 17 }).open().url, 'ws://server.test/push/tok?since=17');
    assert.equal(setup({ since: 0 }).open().url, 'ws://server.test/push/tok?since=0');
    const h = setup({ since: 17 });
    assert.equal(h.client.lastSeq, 17);
  });

  test('a token function is asked before every attempt, with the reason', async () => {
    const reasons = [];
    let n = 0;
    const h = setup({
      token: (reason) => {
        reasons.push(reason);
        return `t${++n}`;
      },
    });
    h.open();
    assert.equal(h.socket.url, 'ws://server.test/push/t1');
    h.reconnect(1006);
    assert.equal(h.socket.url, 'ws://server.test/push/t2');
    assert.deepEqual(reasons, ['connect', 'reconnect']);
  });

  test('an async token function is awaited', async () => {
    const h = setup({ token: async () => 'later' });
    h.client.connect();
    assert.equal(h.sockets.length, 0);
    await flush();
    assert.equal(h.socket.url, 'ws://server.test/push/later');
  });
});

// -- duplicates --------------------------------------------------------------------

describe('duplicates and counter restarts', () => {
  test('within a connection, a seq not above the previous one is dropped', () => {
    const h = setup();
    const ws = h.open();
    ws.deliver(envelope(5));
    ws.deliver(envelope(5, { messageId: 'other-5' }));
    ws.deliver(envelope(4, { messageId: 'other-4' }));
    ws.deliver(envelope(9));
    assert.deepEqual(
      h.messages.map((m) => m.seq),
      [5, 9],
    );
    assert.equal(h.client.lastSeq, 9);
    assert.equal(h.resets.length, 0);
  });

  test('across connections, a message seen before is dropped', () => {
    const h = setup();
    h.open();
    for (const seq of [1, 2, 3]) h.socket.deliver(envelope(seq));
    const ws = h.reconnect(1006);
    ws.deliver(envelope(2)); // redelivered held messages, same bytes
    ws.deliver(envelope(3));
    ws.deliver(envelope(4));
    assert.deepEqual(
      h.messages.map((m) => m.seq),
      [1, 2, 3, 4],
    );
    assert.equal(h.resets.length, 0);
  });

  test('an unseen message at or below lastSeq first on a connection is a counter restart', () => {
    const h = setup();
    h.open();
    h.socket.deliver(envelope(10));
    h.socket.deliver(envelope(11));
    const ws = h.reconnect(1001);
    ws.deliver(envelope(1, { messageId: 'ffff-1' }));
    ws.deliver(envelope(2, { messageId: 'ffff-2' }));
    assert.deepEqual(h.resets, [{ from: 11, to: 1 }]);
    assert.deepEqual(
      h.messages.map((m) => m.messageId),
      ['ab12-10', 'ab12-11', 'ffff-1', 'ffff-2'],
    );
    assert.equal(h.client.lastSeq, 2);
    h.reconnect(1006);
    assert.match(h.socket.url, /\?since=2$/);
  });

  test('a restart may reuse a scheduled job id: a different seq is not a duplicate', () => {
    const h = setup();
    h.open();
    h.socket.deliver(envelope(7, { messageId: 'P-job1' }));
    const ws = h.reconnect(1001);
    ws.deliver(envelope(3, { messageId: 'P-job1' }));
    assert.deepEqual(h.resets, [{ from: 7, to: 3 }]);
    assert.equal(h.messages.length, 2);
  });

  test('the seen ids are bounded', () => {
    const h = setup();
    h.open();
    for (let seq = 1; seq <= SEEN_IDS + 10; seq++) h.socket.deliver(envelope(seq));
    const ws = h.reconnect(1006);
    ws.deliver(envelope(SEEN_IDS + 10)); // still remembered
    assert.equal(h.resets.length, 0);
    ws.deliver(envelope(SEEN_IDS + 11));
    const again = h.reconnect(1006);
    again.deliver(envelope(1)); // forgotten long ago: taken for a restart
    assert.deepEqual(h.resets, [{ from: SEEN_IDS + 11, to: 1 }]);
  });
});

// -- close codes --------------------------------------------------------------------

describe('close codes', () => {
  test('4401: rejected, and no socket is ever created again', () => {
    const h = setup();
    h.open();
    h.socket.hangUp(4401, 'token revoked');
    assert.deepEqual(h.lastState, {
      state: 'rejected',
      previous: 'open',
      code: 4401,
      reason: 'token revoked',
    });
    h.clock.advance(3_600_000);
    h.client.connect();
    h.clock.advance(3_600_000);
    assert.equal(h.sockets.length, 1);
    assert.equal(h.client.attempts, 1);
    assert.equal(h.clock.pending, 0);
    assert.equal(h.client.state, 'rejected');
  });

  test('4401 right after the upgrade is final too, even with a token function', () => {
    const h = setup({ token: () => 'x' });
    h.client.connect();
    h.socket.accept();
    h.socket.hangUp(4401, 'unknown or revoked token');
    h.clock.advance(3_600_000);
    assert.equal(h.sockets.length, 1);
    assert.equal(h.client.state, 'rejected');
  });

  test('4402: back-off, then a fresh token asked for with "expired"', () => {
    const reasons = [];
    const h = setup({
      minDelay: 500,
      random: () => 0,
      token: (reason) => {
        reasons.push(reason);
        return reasons.length === 1 ? 'old' : 'new';
      },
    });
    h.open();
    h.socket.hangUp(4402, 'token expired');
    assert.equal(h.lastState.state, 'waiting');
    assert.equal(h.lastState.code, 4402);
    assert.equal(h.lastState.delay, 250);
    assert.equal(h.sockets.length, 1);
    h.clock.advance(250);
    assert.deepEqual(reasons, ['connect', 'expired']);
    assert.equal(h.socket.url, 'ws://server.test/push/new');
  });

  test('4402 asks "expired" until a connection opens', () => {
    const reasons = [];
    const h = setup({ token: (r) => (reasons.push(r), 't') });
    h.open();
    h.socket.hangUp(4402);
    h.clock.advance(h.lastState.delay);
    h.socket.hangUp(1006); // the fresh token's attempt failed on the network
    h.clock.advance(h.lastState.delay);
    h.socket.accept();
    h.reconnect(1006);
    assert.deepEqual(reasons, ['connect', 'expired', 'expired', 'reconnect']);
  });

  test('4402 with a string token cannot refresh: rejected', () => {
    const h = setup();
    h.open();
    h.socket.hangUp(4402, 'token expired');
    assert.equal(h.client.state, 'rejected');
    h.clock.advance(3_600_000);
    assert.equal(h.sockets.length, 1);
  });

  for (const [code, reason] of [
    [1008, 'kicked'],
    [1008, 'too many connections for this user'],
    [1002, 'protocol error'],
    [1007, 'invalid UTF-8'],
  ]) {
    test(`${code} ${reason}: stopped, no retry, connect() works again`, () => {
      const h = setup();
      h.open();
      h.socket.hangUp(code, reason);
      assert.deepEqual(h.lastState, { state: 'stopped', previous: 'open', code, reason });
      h.clock.advance(3_600_000);
      assert.equal(h.sockets.length, 1);
      h.client.connect();
      assert.equal(h.sockets.length, 2);
      assert.equal(h.client.state, 'connecting');
    });
  }

  for (const code of [1001, 1006, 1009, 1011, 4000, 4001, 1000]) {
    test(`${code}: reconnect after the back-off`, () => {
      const h = setup();
      h.open();
      h.socket.hangUp(code);
      assert.equal(h.lastState.state, 'waiting');
      assert.equal(h.lastState.code, code);
      h.clock.advance(h.lastState.delay);
      assert.equal(h.sockets.length, 2);
      h.socket.accept();
      assert.equal(h.client.state, 'open');
    });
  }

  test('a close event without a code counts as 1006', () => {
    const h = setup();
    h.open();
    h.socket.onclose({ type: 'close' });
    assert.equal(h.lastState.code, 1006);
    assert.equal(h.client.state, 'waiting');
  });
});

// -- pause / resume -------------------------------------------------------------------

describe('pause and resume', () => {
  test('send unsubscribe / subscribe once each', () => {
    const h = setup();
    const ws = h.open();
    h.client.pause();
    h.client.pause();
    assert.equal(h.client.paused, true);
    h.client.resume();
    h.client.resume();
    assert.equal(h.client.paused, false);
    assert.deepEqual(ws.sent, ['unsubscribe', 'subscribe']);
  });

  test('a pause is applied again on every new connection', () => {
    const h = setup();
    h.open();
    h.client.pause();
    assert.deepEqual(h.reconnect(1006).sent, ['unsubscribe']);
    assert.deepEqual(h.reconnect(1001).sent, ['unsubscribe']);
    h.client.resume();
    assert.deepEqual(h.socket.sent, ['unsubscribe', 'subscribe']);
    assert.deepEqual(h.reconnect(1006).sent, []);
  });

  test('pause while disconnected takes effect on the next connection', () => {
    const h = setup();
    h.client.pause();
    h.client.connect();
    assert.deepEqual(h.socket.sent, []);
    h.socket.accept();
    assert.deepEqual(h.socket.sent, ['unsubscribe']);
  });
});

// -- topics ---------------------------------------------------------------------------

describe('topics', () => {
  test('subscribe resolves on ok and the topic is followed', async () => {
    const h = setup();
    const ws = h.open();
    const p = h.client.subscribe('dev/42');
    assert.deepEqual(ws.sent.map((s) => JSON.parse(s)), [{ op: 'subscribe', topic: 'dev/42' }]);
    assert.equal(h.client.topics.has('dev/42'), false);
    ws.deliver({ ok: true, op: 'subscribe', topic: 'dev/42' });
    await resolvesSoon(p);
    assert.deepEqual([...h.client.topics], ['dev/42']);
    assert.equal(h.messages.length, 0, 'a reply is not a message');
  });

  test('subscribe rejects with the server error', async () => {
    const h = setup();
    const ws = h.open();
    const p = h.client.subscribe('secret');
    ws.deliver({ ok: false, op: 'subscribe', topic: 'secret', error: 'topic not allowed' });
    await rejectsSoon(p, { message: 'topic not allowed' });
    assert.equal(h.client.topics.size, 0);
  });

  test('replies settle requests first in, first out per op and topic', async () => {
    const h = setup();
    const ws = h.open();
    const order = [];
    const a = h.client.subscribe('a').then(() => order.push('a1'));
    const b = h.client.subscribe('b').then(() => order.push('b'));
    const a2 = h.client.subscribe('a').catch((e) => order.push(`a2 ${e.message}`));
    ws.deliver({ ok: true, op: 'subscribe', topic: 'a' });
    ws.deliver({ ok: false, op: 'subscribe', topic: 'a', error: 'topic limit 64 reached' });
    ws.deliver({ ok: true, op: 'subscribe', topic: 'b' });
    await resolvesSoon(Promise.all([a, b, a2]));
    assert.deepEqual(order, ['a1', 'a2 topic limit 64 reached', 'b']);
  });

  test('unsubscribe resolves and the topic is no longer followed', async () => {
    const h = setup();
    const ws = h.open();
    const s = h.client.subscribe('t');
    ws.deliver({ ok: true, op: 'subscribe', topic: 't' });
    await resolvesSoon(s);
    const u = h.client.unsubscribe('t');
    assert.deepEqual(JSON.parse(ws.sent.at(-1)), { op: 'unsubscribe', topic: 't' });
    ws.deliver({ ok: true, op: 'unsubscribe', topic: 't' });
    await resolvesSoon(u);
    assert.equal(h.client.topics.size, 0);
    assert.deepEqual(h.reconnect(1006).sent, []);
  });

  test('followed topics are subscribed again after a reconnect', async () => {
    const h = setup();
    const ws = h.open();
    const s = h.client.subscribe('dev/42');
    ws.deliver({ ok: true, op: 'subscribe', topic: 'dev/42' });
    await resolvesSoon(s);
    const again = h.reconnect(1001);
    assert.deepEqual(again.sent.map((f) => JSON.parse(f)), [{ op: 'subscribe', topic: 'dev/42' }]);
    again.deliver({ ok: true, op: 'subscribe', topic: 'dev/42' }); // just a confirmation
    assert.equal(h.errors.length, 0);
    assert.deepEqual([...h.client.topics], ['dev/42']);
  });

  test('a re-subscribe the server now refuses is reported and forgotten', async () => {
    const h = setup();
    const ws = h.open();
    const s = h.client.subscribe('dev/42');
    ws.deliver({ ok: true, op: 'subscribe', topic: 'dev/42' });
    await resolvesSoon(s);
    const again = h.reconnect(1001);
    again.deliver({ ok: false, op: 'subscribe', topic: 'dev/42', error: 'topic not allowed' });
    assert.equal(h.client.topics.size, 0);
    assert.equal(h.errors.length, 1);
    assert.equal(h.errors[0].kind, 'topic');
    assert.deepEqual(h.reconnect(1006).sent, []);
  });

  test('a request pending when the connection drops is sent again and settled there', async () => {
    const h = setup();
    const ws = h.open();
    let settled = false;
    const p = h.client.subscribe('x').then(() => (settled = true));
    ws.hangUp(1006);
    await flush();
    assert.equal(settled, false);
    h.clock.advance(h.lastState.delay);
    const again = h.socket;
    again.accept();
    assert.deepEqual(again.sent.map((f) => JSON.parse(f)), [{ op: 'subscribe', topic: 'x' }]);
    again.deliver({ ok: true, op: 'subscribe', topic: 'x' });
    await resolvesSoon(p);
    assert.equal(settled, true);
  });

  test('a request made before the connection opens is sent when it does', async () => {
    const h = setup();
    const p = h.client.subscribe('early');
    h.client.connect();
    assert.deepEqual(h.socket.sent, []);
    h.socket.accept();
    assert.deepEqual(h.socket.sent.map((f) => JSON.parse(f)), [{ op: 'subscribe', topic: 'early' }]);
    h.socket.deliver({ ok: true, op: 'subscribe', topic: 'early' });
    await resolvesSoon(p);
  });

  test('a bad topic is refused without asking the server', async () => {
    const h = setup();
    const ws = h.open();
    await rejectsSoon(h.client.subscribe(''), /1 to 128 bytes/);
    await rejectsSoon(h.client.subscribe('é'.repeat(65)), /1 to 128 bytes/);
    await rejectsSoon(h.client.subscribe(42), /1 to 128 bytes/);
    assert.deepEqual(ws.sent, []);
  });

  test(`at most ${MAX_PENDING} requests wait at once`, async () => {
    const h = setup();
    h.open();
    const waiting = [];
    for (let i = 0; i < MAX_PENDING; i++) waiting.push(h.client.subscribe(`t${i}`));
    await rejectsSoon(h.client.subscribe('one-more'), /too many/);
    assert.equal(h.socket.sent.length, MAX_PENDING);
    h.socket.deliver({ ok: true, op: 'subscribe', topic: 't0' });
    await resolvesSoon(waiting[0]);
    const p = h.client.subscribe('now-fits');
    h.socket.deliver({ ok: true, op: 'subscribe', topic: 'now-fits' });
    await resolvesSoon(p);
  });

  test('pending requests are rejected when the token is rejected, and later ones at once', async () => {
    const h = setup();
    h.open();
    const p = h.client.subscribe('x');
    h.socket.hangUp(4401, 'token revoked');
    await rejectsSoon(p, /rejected/);
    await rejectsSoon(h.client.subscribe('y'), /rejected/);
  });

  test('pending requests are rejected when the connection stops', async () => {
    const h = setup();
    h.open();
    const p = h.client.unsubscribe('x');
    h.socket.hangUp(1008, 'kicked');
    await rejectsSoon(p, /stopped/);
  });
});

// -- heartbeat --------------------------------------------------------------------------

describe('heartbeat', () => {
  test('sends -- every heartbeat ms while open', () => {
    const h = setup({ heartbeat: 1000 });
    const ws = h.open();
    h.clock.advance(999);
    assert.deepEqual(ws.sent, []);
    h.clock.advance(1);
    assert.deepEqual(ws.sent, ['--']);
    h.clock.advance(2500);
    assert.deepEqual(ws.sent, ['--', '--', '--']);
  });

  test('stops with the connection and starts again with the next', () => {
    const h = setup({ heartbeat: 1000, minDelay: 10_000, random: () => 0 });
    const ws = h.open();
    ws.hangUp(1006);
    h.clock.advance(4999); // the back-off is 5000 ms
    assert.deepEqual(ws.sent, []);
    h.clock.advance(1);
    const next = h.socket;
    next.accept();
    h.clock.advance(1000);
    assert.deepEqual(next.sent, ['--']);
  });

  test('heartbeat 0 sends none', () => {
    const h = setup({ heartbeat: 0 });
    const ws = h.open();
    assert.equal(h.clock.pending, 0);
    h.clock.advance(3_600_000);
    assert.deepEqual(ws.sent, []);
  });
});

// -- close() --------------------------------------------------------------------------------

describe('close()', () => {
  test('closes the socket with 1000 and leaves no timer behind', async () => {
    const h = setup();
    const ws = h.open();
    const p = h.client.subscribe('x');
    assert.equal(h.clock.pending, 1, 'the heartbeat');
    h.client.close();
    assert.deepEqual(ws.closedWith, { code: 1000, reason: 'client closed' });
    assert.equal(h.client.state, 'closed');
    assert.equal(h.clock.pending, 0);
    await rejectsSoon(p, /closed/);
    await rejectsSoon(h.client.subscribe('y'), /closed/);
    assert.equal(h.client.send('late'), false);
  });

  test('cancels a waiting back-off', () => {
    const h = setup();
    h.open();
    h.socket.hangUp(1006);
    assert.equal(h.clock.pending, 1);
    h.client.close();
    assert.equal(h.clock.pending, 0);
    h.clock.advance(3_600_000);
    assert.equal(h.sockets.length, 1);
    h.client.connect();
    assert.equal(h.sockets.length, 1, 'closed is for good');
  });

  test('events of the old socket are ignored afterwards', () => {
    const h = setup();
    const ws = h.open();
    h.client.close();
    ws.onclose?.({ code: 1000 });
    ws.onmessage?.({ data: JSON.stringify(envelope(1)) });
    assert.equal(h.client.state, 'closed');
    assert.equal(h.messages.length, 0);
  });

  test('called from a state listener, it ends everything', () => {
    for (const when of ['connecting', 'open', 'waiting']) {
      const h = setup();
      h.client.on('state', (e) => e.state === when && h.client.close());
      h.client.connect();
      h.socket?.accept();
      h.socket?.hangUp(1006);
      assert.equal(h.client.state, 'closed', when);
      assert.equal(h.clock.pending, 0, `no timer left after close() on ${when}`);
      h.clock.advance(3_600_000);
      assert.equal(h.sockets.length, when === 'connecting' ? 0 : 1, when);
    }
  });

  test('during an async token fetch, no socket is opened', async () => {
    const h = setup({ token: async () => 'later' });
    h.client.connect();
    h.client.close();
    await flush();
    assert.equal(h.sockets.length, 0);
    assert.equal(h.client.state, 'closed');
  });
});

// -- states and other events --------------------------------------------------------------------

describe('states and events', () => {
  test('the sequence of state events', () => {
    const h = setup({ random: () => 0, minDelay: 500 });
    assert.equal(h.client.state, 'idle');
    h.open();
    h.client.connect(); // idempotent
    h.reconnect(1006);
    h.client.close();
    assert.deepEqual(h.states, [
      { state: 'connecting', previous: 'idle', attempt: 0 },
      { state: 'open', previous: 'connecting' },
      { state: 'waiting', previous: 'open', code: 1006, reason: '', attempt: 1, delay: 250 },
      { state: 'connecting', previous: 'waiting', attempt: 1 },
      { state: 'open', previous: 'connecting' },
      { state: 'closed', previous: 'open' },
    ]);
    assert.equal(h.sockets.length, 2);
  });

  test('messages reach listeners parsed; off() removes a listener', () => {
    const h = setup();
    const ws = h.open();
    const got = [];
    const off = h.client.on('message', (m) => got.push(m));
    const m = envelope(3, { title: 'door', type: 0, topic: 'dev/42' });
    ws.deliver(m);
    off();
    ws.deliver(envelope(4));
    assert.deepEqual(got, [m]);
    assert.equal(h.messages.length, 2);
  });

  test('an unknown event name throws', () => {
    const h = setup();
    assert.throws(() => h.client.on('mesage', () => {}), TypeError);
  });

  test('frames that are not JSON, or neither messages nor replies, are errors', () => {
    const h = setup();
    const ws = h.open();
    ws.deliver('not json');
    ws.deliver({ hello: 'world' });
    ws.deliver({ messageId: 'x' }); // no seq
    assert.equal(h.messages.length, 0);
    assert.deepEqual(
      h.errors.map((e) => [e.kind, e.data]),
      [
        ['frame', 'not json'],
        ['frame', '{"hello":"world"}'],
        ['frame', '{"messageId":"x"}'],
      ],
    );
    assert.equal(h.client.state, 'open');
  });

  test('a token function that throws is an error, then a back-off', async () => {
    let calls = 0;
    const h = setup({
      token: () => {
        calls += 1;
        if (calls === 1) throw new Error('no session');
        return 't';
      },
    });
    h.client.connect();
    assert.equal(h.errors[0].kind, 'token');
    assert.equal(h.errors[0].cause.message, 'no session');
    assert.equal(h.client.state, 'waiting');
    h.clock.advance(h.lastState.delay);
    assert.equal(h.sockets.length, 1);
  });

  test('a token promise that rejects is an error, then a back-off', async () => {
    const h = setup({ token: () => Promise.reject(new Error('offline')) });
    h.client.connect();
    await flush();
    assert.equal(h.errors[0].kind, 'token');
    assert.equal(h.client.state, 'waiting');
    assert.equal(h.sockets.length, 0);
  });

  test('a listener that throws is reported and the others still run', () => {
    const h = setup();
    const ws = h.open();
    h.client.on('message', () => {
      throw new Error('oops');
    });
    ws.deliver(envelope(1));
    assert.equal(h.messages.length, 1);
    assert.equal(h.errors[0].kind, 'listener');
  });

  test('send() is false unless open', () => {
    const h = setup();
    assert.equal(h.client.send('x'), false);
    h.client.connect();
    assert.equal(h.client.send('x'), false);
    h.socket.accept();
    assert.equal(h.client.send('hello'), true);
    assert.deepEqual(h.socket.sent, ['hello']);
    h.socket.hangUp(1006);
    assert.equal(h.client.send('x'), false);
  });

  test('bad options are refused', () => {
    const { FakeWebSocket } = fakeWebSocketClass();
    const make = (o) => () => new WspushClient({ url: 'ws://h/push', token: 't', WebSocket: FakeWebSocket, ...o });
    assert.throws(make({ url: '' }), TypeError);
    assert.throws(make({ token: 3 }), TypeError);
    assert.throws(make({ minDelay: -1 }), RangeError);
    assert.throws(make({ since: 1.5 }), RangeError);
    assert.throws(make({ minDelay: 1000, maxDelay: 10 }), RangeError);
    assert.throws(make({ WebSocket: 'not a class' }), TypeError);
  });
});
