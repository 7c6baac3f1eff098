/**
 * wspush.js: the reference JavaScript client of the wspush push server.
 *
 * One ES module, no dependencies, no build step. It runs in browsers and in
 * Node 22+ (Node 20 and 21 need `node --experimental-websocket`, or any
 * WebSocket class passed as `options.WebSocket`). The wire contract it
 * follows is docs/protocol.md, sections 3 to 5.
 *
 * ```js
 * import { WspushClient } from './wspush.js';
 * const client = new WspushClient({ url: 'ws://127.0.0.1:7001/push', token: 'abc' });
 * client.on('message', (envelope) => console.log(envelope.content));
 * client.connect();
 * ```
 *
 * ## Connecting
 *
 * Every attempt connects to `${url}/${token}` (the token verbatim: the server
 * does not percent-decode it; trailing slashes of `url` are dropped). The
 * query carries `since=LASTSEQ` once a message has been seen (or from the
 * start when the `since` option is a number) and `device=` when set.
 * A token function is called before every attempt with the reason
 * `'connect'` (the first attempt after connect()), `'reconnect'`, or
 * `'expired'` (the server closed with 4402; the reason stays `'expired'`
 * until a connection opens).
 *
 * ## Close codes
 *
 * | code | outcome |
 * | --- | --- |
 * | 1000 after close() | `closed` |
 * | 4401 (refused or revoked token) | `rejected`: never retried |
 * | 4402 (expired token) | with a token function: back-off, then a fresh token (`'expired'`); with a string token: `rejected` |
 * | 1008 (kicked, too many connections), 1002 / 1007 (protocol errors) | `stopped`: connect() may be called again |
 * | anything else (1001, 1006, 1009, 1011, 4000, 4001, ...) | back-off, then reconnect |
 *
 * ## Back-off
 *
 * Retry n (n = 0, 1, 2, ... counts the failures in a row) waits
 * `cap = min(maxDelay, minDelay * 2**n)`, then a delay drawn uniformly from
 * `[cap/2, cap)`: `delay = cap/2 + random() * cap/2` ("equal jitter").
 * The count goes back to 0 when connect() is called and when a connection
 * that stayed open for at least 10 s (`STABLE_AFTER_MS`) closes. A
 * connection that opens and closes sooner (a token refused right after the
 * upgrade, a slow-consumer loop) still counts as a failure, so such loops
 * slow down too.
 *
 * ## Duplicates and counter restarts
 *
 * The server numbers its messages with `seq`, strictly increasing within a
 * connection. `lastSeq` is the highest seq delivered (or the `since`
 * option). A message is dropped as a duplicate when
 *   - its seq is not above the previous seq seen on the same connection, or
 *   - its seq is at most `lastSeq` and its `messageId` is among the last
 *     1,024 ids seen (`SEEN_IDS`), with that same seq (a held message comes
 *     again as the very same bytes; the seq check keeps a scheduled job id
 *     such as `P-job1`, which a restarted server may hand out again, from
 *     being taken for an old message).
 * A message with seq at most `lastSeq` and an id never seen means the
 * server's counter restarted (a server without a data log starts again at
 * seq 1; in practice this is the first message of a new connection): the
 * client emits `reset` {from: lastSeq, to: seq}, sets `lastSeq = seq` and
 * delivers it.
 *
 * ## Topics and pause
 *
 * subscribe()/unsubscribe() return promises settled by the server's reply
 * (replies are matched first in, first out per op and topic). Topics whose
 * subscribe succeeded (`client.topics`) are subscribed again after every
 * reconnect; requests still unanswered when a connection drops are sent
 * again on the next one. At most 256 requests wait at once
 * (`MAX_PENDING`). pause()/resume() send `unsubscribe`/`subscribe`, which
 * the server forgets with the connection, so a paused client sends
 * `unsubscribe` again on each new connection.
 *
 * The client does not detect a silently dead connection by itself: the
 * server pings it (browsers answer pings without telling the page) and the
 * `--` heartbeat keeps the server's idle timer from firing.
 *
 * @module wspush
 */

/** A connection open at least this long resets the back-off count (ms). */
export const STABLE_AFTER_MS = 10_000;
/** How many recent message ids are remembered for duplicate detection. */
export const SEEN_IDS = 1024;
/** How many topic requests may wait for a reply at once. */
export const MAX_PENDING = 256;

/** Connection states, in the order a client usually meets them. */
export const STATES = Object.freeze([
  'idle',
  'connecting',
  'open',
  'waiting',
  'rejected',
  'stopped',
  'closed',
]);

const EVENTS = ['message', 'state', 'reset', 'error'];
const MAX_TOPIC_BYTES = 128;
const OPEN = 1; // WebSocket.OPEN

/**
 * @typedef {object} Envelope  One push, as the server sent it (§4).
 * @property {string} messageId
 * @property {number} seq
 * @property {string} [title]
 * @property {number} [type]
 * @property {string} [topic]  set on topic publishes
 * @property {*} content
 * @property {number} ts  Unix ms when the message was pushed
 */

/**
 * @typedef {object} StateEvent
 * @property {string} state  one of STATES
 * @property {string} previous
 * @property {number} [code]  the close code that led here
 * @property {string} [reason]  its reason text
 * @property {number} [attempt]  retry number in the current run of failures
 *   (1 = first retry); 0 on the first connecting after connect()
 * @property {number} [delay]  ms before the next attempt (`waiting` only)
 */

/**
 * @typedef {'connect' | 'reconnect' | 'expired'} TokenReason
 * @typedef {string | ((reason: TokenReason) => string | Promise<string>)} TokenSource
 */

/**
 * @typedef {object} ClientOptions
 * @property {string} url  the WebSocket path URL, e.g. `ws://host:7001/push`
 * @property {TokenSource} token
 * @property {number} [since]  resume above this seq on the first connection
 * @property {string} [device]  sent as `?device=` (percent-encoded)
 * @property {number} [minDelay=500]  back-off base, ms
 * @property {number} [maxDelay=30000]  back-off cap, ms
 * @property {number} [heartbeat=30000]  ms between `--` heartbeats; 0 = none
 * @property {typeof WebSocket} [WebSocket]
 * @property {(fn: () => void, ms: number) => unknown} [setTimeout]
 * @property {(id: unknown) => void} [clearTimeout]
 * @property {() => number} [random]  in [0, 1)
 * @property {() => number} [now]  ms
 */

/**
 * A wspush client: one WebSocket connection at a time, reconnected with
 * back-off, resumed with `?since=`, duplicates dropped.
 */
export class WspushClient {
  // Options, fixed at construction.
  #url;
  #token;
  #device;
  #minDelay;
  #maxDelay;
  #heartbeatMs;
  #WebSocket;
  #setTimeout;
  #clearTimeout;
  #random;
  #now;

  /** @type {Map<string, Set<Function>>} */
  #listeners = new Map(EVENTS.map((name) => [name, new Set()]));

  #state = 'idle';
  /** Bumped whenever the current socket or attempt is abandoned. */
  #generation = 0;
  #socket = null;
  #openedAt = null;
  #backoffTimer = null;
  #heartbeatTimer = null;
  #attempts = 0;
  /** Failures in a row (the back-off exponent). */
  #failures = 0;
  /** The token reason of the next attempt. */
  #reason = 'connect';
  #expired = false;

  #lastSeq = 0;
  /** Whether `since` goes into the URL (a seq is known). */
  #resume = false;
  /** Highest seq seen on the current connection (null: none yet). */
  #connectionSeq = null;
  /** Recent `seq:messageId` keys, oldest first (a Set keeps insertion order). */
  #seenIds = new Set();

  #paused = false;
  /** Topics whose subscribe succeeded. */
  #topics = new Set();
  /** @type {{op: string, topic: string, resolve: Function, reject: Function}[]} */
  #pending = [];

  /** @param {ClientOptions} options */
  constructor(options) {
    const o = options ?? {};
    if (typeof o.url !== 'string' || o.url === '') {
      throw new TypeError('options.url must be a ws:// or wss:// URL');
    }
    if (typeof o.token !== 'string' && typeof o.token !== 'function') {
      throw new TypeError('options.token must be a string or a function');
    }
    this.#url = o.url.replace(/\/+$/, '');
    this.#token = o.token;
    this.#device = o.device ?? null;
    this.#minDelay = nonNegative(o.minDelay ?? 500, 'minDelay');
    this.#maxDelay = nonNegative(o.maxDelay ?? 30_000, 'maxDelay');
    this.#heartbeatMs = nonNegative(o.heartbeat ?? 30_000, 'heartbeat');
    if (this.#maxDelay < this.#minDelay) {
      throw new RangeError('options.maxDelay must be at least minDelay');
    }
    if (o.since != null) {
      if (!Number.isSafeInteger(o.since) || o.since < 0) {
        throw new RangeError('options.since must be an integer >= 0');
      }
      this.#lastSeq = o.since;
      this.#resume = true;
    }
    this.#WebSocket = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this.#WebSocket !== 'function') {
      throw new TypeError(
        'no WebSocket class: pass options.WebSocket, or use Node 22+ ' +
          '(node --experimental-websocket on Node 20)',
      );
    }
    this.#setTimeout = o.setTimeout ?? globalThis.setTimeout.bind(globalThis);
    this.#clearTimeout = o.clearTimeout ?? globalThis.clearTimeout.bind(globalThis);
    this.#random = o.random ?? Math.random;
    this.#now = o.now ?? Date.now;
  }

  // -- read-only state ----------------------------------------------------

  /** The connection state, one of STATES. */
  get state() {
    return this.#state;
  }

  /** The highest seq delivered so far (or the `since` option; 0 if none). */
  get lastSeq() {
    return this.#lastSeq;
  }

  /** Whether pause() is in effect. */
  get paused() {
    return this.#paused;
  }

  /** The topics followed (a copy). */
  get topics() {
    return new Set(this.#topics);
  }

  /** Connection attempts made so far. */
  get attempts() {
    return this.#attempts;
  }

  // -- events ---------------------------------------------------------------

  /**
   * Listen to `message` (an Envelope), `state` (a StateEvent), `reset`
   * ({from, to}) or `error` (an Error with a `kind`: `frame`, `token`,
   * `topic`, `socket` or `listener`).
   * @param {'message' | 'state' | 'reset' | 'error'} event
   * @param {Function} listener
   * @returns {() => void} removes the listener
   */
  on(event, listener) {
    const set = this.#listeners.get(event);
    if (!set) throw new TypeError(`unknown event ${JSON.stringify(event)}`);
    if (typeof listener !== 'function') throw new TypeError('listener must be a function');
    set.add(listener);
    return () => set.delete(listener);
  }

  // -- control --------------------------------------------------------------

  /** Start connecting. Does nothing unless the client is idle or stopped. */
  connect() {
    if (this.#state !== 'idle' && this.#state !== 'stopped') return;
    this.#failures = 0;
    this.#reason = this.#expired ? 'expired' : 'connect';
    this.#attempt(0);
  }

  /** Stop for good: close with 1000, cancel every timer, reject pending requests. */
  close() {
    if (this.#state === 'closed') return;
    this.#dropSocket(1000, 'client closed');
    this.#cancelBackoff();
    this.#rejectPending('the client was closed');
    this.#setState('closed');
  }

  /** Stop receiving pushes (`unsubscribe`), on this and every later connection. */
  pause() {
    if (this.#paused) return;
    this.#paused = true;
    this.#sendFrame('unsubscribe');
  }

  /** Receive pushes again (`subscribe`). */
  resume() {
    if (!this.#paused) return;
    this.#paused = false;
    this.#sendFrame('subscribe');
  }

  /**
   * Follow a topic. Resolves when the server says ok; rejects with the
   * server's error (`topic not allowed`, ...), or when the client is closed,
   * rejected or stopped first.
   * @param {string} topic
   * @returns {Promise<void>}
   */
  subscribe(topic) {
    return this.#request('subscribe', topic);
  }

  /**
   * Stop following a topic (not following it is fine).
   * @param {string} topic
   * @returns {Promise<void>}
   */
  unsubscribe(topic) {
    return this.#request('unsubscribe', topic);
  }

  /**
   * Send an upstream message (a string or binary data). `--`, `subscribe`,
   * `unsubscribe` and `{"op":...}` objects mean something to the server:
   * use pause(), resume() and subscribe() for those.
   * @param {string | ArrayBufferLike | Blob | ArrayBufferView} data
   * @returns {boolean} false when the connection is not open
   */
  send(data) {
    return this.#sendFrame(data);
  }

  // -- connecting -------------------------------------------------------------

  /** Begin one attempt: get the token, then open the socket. */
  #attempt(retry) {
    const generation = ++this.#generation;
    this.#attempts += 1;
    this.#setState('connecting', { attempt: retry });
    if (generation !== this.#generation) return; // a state listener called close()
    const reason = this.#reason;
    let token;
    try {
      token = typeof this.#token === 'function' ? this.#token(reason) : this.#token;
    } catch (error) {
      this.#tokenFailed(error);
      return;
    }
    if (token != null && typeof token.then === 'function') {
      token.then(
        (value) => generation === this.#generation && this.#open(value),
        (error) => generation === this.#generation && this.#tokenFailed(error),
      );
    } else {
      this.#open(token);
    }
  }

  #tokenFailed(error) {
    this.#emitError('token', 'the token function failed', { cause: error });
    this.#retry({});
  }

  #open(token) {
    if (typeof token !== 'string') {
      this.#tokenFailed(new TypeError(`the token function returned ${typeof token}`));
      return;
    }
    const url = this.#connectionUrl(token);
    let socket;
    try {
      socket = new this.#WebSocket(url);
    } catch (error) {
      // A URL the WebSocket class refuses will not get better by retrying.
      this.#emitError('socket', `cannot open ${this.#url}`, { cause: error });
      this.#setState('stopped', { reason: String(error?.message ?? error) });
      this.#rejectPending('the connection stopped');
      return;
    }
    const generation = this.#generation;
    const current = (handler) => (event) => {
      if (generation === this.#generation) handler.call(this, event);
    };
    socket.onopen = current(this.#onOpen);
    socket.onmessage = current(this.#onMessage);
    socket.onclose = current(this.#onClose);
    socket.onerror = null; // a close event always follows
    this.#socket = socket;
  }

  #connectionUrl(token) {
    const query = [];
    if (this.#resume) query.push(`since=${this.#lastSeq}`);
    if (this.#device != null) query.push(`device=${encodeURIComponent(this.#device)}`);
    return `${this.#url}/${token}${query.length ? `?${query.join('&')}` : ''}`;
  }

  #onOpen() {
    this.#openedAt = this.#now();
    this.#connectionSeq = null;
    this.#expired = false;
    this.#reason = 'reconnect';
    this.#setState('open');
    if (this.#state !== 'open') return; // a state listener called close()
    if (this.#paused) this.#sendFrame('unsubscribe');
    // Topics already followed, unless a request about them is waiting:
    // that request, sent again below, decides their fate.
    const waiting = new Set(this.#pending.map((p) => p.topic));
    for (const topic of this.#topics) {
      if (!waiting.has(topic)) this.#sendFrame(topicFrame('subscribe', topic));
    }
    for (const p of this.#pending) this.#sendFrame(topicFrame(p.op, p.topic));
    this.#scheduleHeartbeat();
  }

  #onClose(event) {
    const code = event?.code ?? 1006;
    const reason = event?.reason ?? '';
    const wasOpen = this.#openedAt != null;
    const stable = wasOpen && this.#now() - this.#openedAt >= STABLE_AFTER_MS;
    this.#socket = null;
    this.#openedAt = null;
    this.#stopHeartbeat();
    if (stable) this.#failures = 0;
    const info = { code, reason };

    if (code === 4401 || (code === 4402 && typeof this.#token !== 'function')) {
      this.#generation++;
      this.#rejectPending(`the token was rejected: ${code} ${reason}`.trim());
      this.#setState('rejected', info);
    } else if (code === 1008 || code === 1002 || code === 1007) {
      this.#generation++;
      this.#rejectPending(`the connection stopped: ${code} ${reason}`.trim());
      this.#setState('stopped', info);
    } else {
      if (code === 4402) this.#expired = true;
      this.#retry(info);
    }
  }

  /** Wait out the back-off, then attempt again. */
  #retry(info) {
    this.#generation++;
    this.#reason = this.#expired ? 'expired' : 'reconnect';
    const n = this.#failures;
    this.#failures += 1;
    const cap = Math.min(this.#maxDelay, this.#minDelay * 2 ** n);
    const delay = cap / 2 + (this.#random() * cap) / 2;
    const attempt = this.#failures;
    // The timer first: a state listener calling close() then cancels it.
    this.#backoffTimer = this.#setTimeout(() => {
      this.#backoffTimer = null;
      this.#attempt(attempt);
    }, delay);
    this.#setState('waiting', { ...info, attempt, delay });
  }

  #cancelBackoff() {
    if (this.#backoffTimer !== null) {
      this.#clearTimeout(this.#backoffTimer);
      this.#backoffTimer = null;
    }
  }

  /** Abandon the current socket (if any) without hearing its close event. */
  #dropSocket(code, reason) {
    this.#generation++;
    this.#stopHeartbeat();
    const socket = this.#socket;
    this.#socket = null;
    this.#openedAt = null;
    if (!socket) return;
    socket.onopen = socket.onmessage = socket.onclose = socket.onerror = null;
    try {
      socket.close(code, reason);
    } catch {
      // Already closing or closed: nothing left to do.
    }
  }

  // -- heartbeat --------------------------------------------------------------

  #scheduleHeartbeat() {
    if (this.#heartbeatMs <= 0) return;
    this.#heartbeatTimer = this.#setTimeout(() => {
      this.#heartbeatTimer = null;
      if (this.#state !== 'open') return;
      this.#sendFrame('--');
      this.#scheduleHeartbeat();
    }, this.#heartbeatMs);
  }

  #stopHeartbeat() {
    if (this.#heartbeatTimer !== null) {
      this.#clearTimeout(this.#heartbeatTimer);
      this.#heartbeatTimer = null;
    }
  }

  // -- incoming frames ----------------------------------------------------------

  #onMessage(event) {
    const data = event?.data;
    if (typeof data !== 'string') {
      this.#emitError('frame', 'unexpected binary frame', { data });
      return;
    }
    let value;
    try {
      value = JSON.parse(data);
    } catch (error) {
      this.#emitError('frame', 'a text frame that is not JSON', { data, cause: error });
      return;
    }
    if (isEnvelope(value)) {
      this.#onEnvelope(value);
    } else if (isTopicReply(value)) {
      this.#onTopicReply(value);
    } else {
      this.#emitError('frame', 'a frame that is neither a message nor a topic reply', { data });
    }
  }

  /** @param {Envelope} envelope */
  #onEnvelope(envelope) {
    const { seq, messageId } = envelope;
    const connectionSeq = this.#connectionSeq;
    if (connectionSeq !== null && seq <= connectionSeq) return; // repeated on this connection
    this.#connectionSeq = seq;
    const key = `${seq}:${messageId}`;
    if (seq <= this.#lastSeq) {
      if (this.#seenIds.has(key)) return; // delivered before this connection
      const from = this.#lastSeq;
      this.#lastSeq = seq;
      this.#emit('reset', { from, to: seq });
    }
    this.#lastSeq = seq;
    this.#resume = true;
    this.#remember(key);
    this.#emit('message', envelope);
  }

  #remember(key) {
    this.#seenIds.delete(key);
    this.#seenIds.add(key);
    if (this.#seenIds.size > SEEN_IDS) {
      this.#seenIds.delete(this.#seenIds.values().next().value);
    }
  }

  #onTopicReply({ ok, op, topic, error }) {
    if (ok) {
      if (op === 'subscribe') this.#topics.add(topic);
      else this.#topics.delete(topic);
    } else if (op === 'subscribe') {
      this.#topics.delete(topic);
    }
    const index = this.#pending.findIndex((p) => p.op === op && p.topic === topic);
    if (index < 0) {
      // The answer to a re-subscribe after a reconnect: only a refusal is news.
      if (!ok) this.#emitError('topic', `${op} ${topic}: ${error}`, { data: topic });
      return;
    }
    const [request] = this.#pending.splice(index, 1);
    if (ok) request.resolve();
    else request.reject(new Error(String(error ?? `${op} refused`)));
  }

  // -- topic requests -------------------------------------------------------

  #request(op, topic) {
    if (this.#state === 'closed' || this.#state === 'rejected') {
      return Promise.reject(new Error(`the client is ${this.#state}`));
    }
    if (typeof topic !== 'string' || topic === '' || byteLength(topic) > MAX_TOPIC_BYTES) {
      return Promise.reject(new Error('topic must be a string of 1 to 128 bytes'));
    }
    if (this.#pending.length >= MAX_PENDING) {
      return Promise.reject(new Error(`too many topic requests waiting (${MAX_PENDING})`));
    }
    return new Promise((resolve, reject) => {
      this.#pending.push({ op, topic, resolve, reject });
      this.#sendFrame(topicFrame(op, topic)); // else sent when a connection opens
    });
  }

  #rejectPending(message) {
    const pending = this.#pending;
    this.#pending = [];
    for (const p of pending) p.reject(new Error(message));
  }

  // -- plumbing -------------------------------------------------------------

  #sendFrame(data) {
    const socket = this.#socket;
    if (this.#state !== 'open' || !socket || socket.readyState !== OPEN) return false;
    try {
      socket.send(data);
      return true;
    } catch (error) {
      this.#emitError('socket', 'send failed', { cause: error });
      return false;
    }
  }

  #setState(state, details = {}) {
    const previous = this.#state;
    this.#state = state;
    this.#emit('state', { state, previous, ...details });
  }

  #emitError(kind, message, { data, cause } = {}) {
    const error = new Error(message, cause === undefined ? undefined : { cause });
    error.kind = kind;
    if (data !== undefined) error.data = data;
    this.#emit('error', error);
  }

  #emit(event, value) {
    for (const listener of [...this.#listeners.get(event)]) {
      try {
        listener(value);
      } catch (error) {
        if (event === 'error') {
          console.error('wspush: an error listener threw', error);
        } else {
          this.#emitError('listener', `a ${event} listener threw`, { cause: error });
        }
      }
    }
  }
}

function nonNegative(value, name) {
  if (typeof value !== 'number' || !Number.isFinite(value) || value < 0) {
    throw new RangeError(`options.${name} must be a number >= 0`);
  }
  return value;
}

function topicFrame(op, topic) {
  return JSON.stringify({ op, topic });
}

function isEnvelope(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    Number.isSafeInteger(value.seq) &&
    value.seq >= 0 &&
    typeof value.messageId === 'string'
  );
}

function isTopicReply(value) {
  return (
    value !== null &&
    typeof value === 'object' &&
    typeof value.ok === 'boolean' &&
    (value.op === 'subscribe' || value.op === 'unsubscribe') &&
    typeof value.topic === 'string'
  );
}

function byteLength(text) {
  return new TextEncoder().encode(text).length;
}
