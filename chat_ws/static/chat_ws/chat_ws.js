/**
 * chat_ws browser client: one websocket per browser app instance, speaking JSON over the
 * `chat_ws.json` subprotocol.
 *
 *   import { ChatClient } from "/static/chat_ws/chat_ws.js";
 *   const client = new ChatClient();
 *   client.on("iviewr-says", (message, { repeated }) => { if (!repeated) show(message.text); });
 *   client.onEvent("state", ({ state }) => badge(state));
 *   client.connect();
 *   client.send("start-conversation");
 *   client.answer("Bicycles.");
 *
 * No dependencies, no globals: WebSocket, timers, randomness, the clock, storage, the
 * network-status source and the document (for visibility) can all be injected, so several clients can share a page and the
 * logic runs under Node with fakes. See docs/browser-client.md.
 */

export const JSON_SUBPROTOCOL = "chat_ws.json";

/** Close codes the server uses (chat_ws/exceptions.py). */
export const CLOSE_NORMAL = 1000;
export const CLOSE_REPLACED = 4001; // another socket with the same client-id took over
export const CLOSE_FORGOTTEN = 4002; // the server forgot this client (close-channel, sweep, admin)
export const CLOSE_CLIENT_ID_BOUND = 4003; // the client-id belongs to another user or session
export const CLOSE_SERVICE_RESTART = 1012; // the server process is stopping: reconnect at once (elsewhere)
export const CLOSE_SERVICE_RESTART_4012 = 4012; // the same, from a server that cannot send 1012 (daphne)

/** Connection states, in the order a healthy client goes through them. */
export const STATES = Object.freeze(["idle", "connecting", "open", "reconnecting", "offline", "closed"]);

const WS_OPEN = 1;

const DEFAULTS = Object.freeze({
  url: null, // websocket URL without query; null: ws(s)://<page host>/ws
  clientId: null, // null: read from storage, or a new random UUID kept there
  storageKey: "chat_ws.client-id", // sessionStorage key of the client-id
  pingInterval: 30000, // milliseconds between pings while open
  reconnectBase: 500, // milliseconds: first reconnect delay ceiling
  firstRetryCap: 1000, // milliseconds: the first attempt after a dropped connection comes within this
  reconnectCap: 30000, // milliseconds: no reconnect delay ceiling exceeds this
  stableAfter: 5000, // milliseconds a connection must last to reset the backoff
  connectTimeout: 10000, // milliseconds an opening socket may take before it is abandoned
  maxQueue: 50, // outgoing messages kept while disconnected (under the server's burst of 60)
  maxSeenKeys: 1000, // p-keys remembered to flag re-sent questions as repeated
  resume: true, // send resume-conversation after a reconnect (boolean or () => boolean)
  conversationId: null, // conversation-id sent with resume-conversation; null: server default
});

/** A version 4 UUID, also where crypto.randomUUID is missing (pages on plain http). */
export function randomUUID(cryptoImpl = globalThis.crypto) {
  if (cryptoImpl && typeof cryptoImpl.randomUUID === "function") return cryptoImpl.randomUUID();
  const bytes = new Uint8Array(16);
  if (cryptoImpl && typeof cryptoImpl.getRandomValues === "function") {
    cryptoImpl.getRandomValues(bytes);
  } else {
    for (let i = 0; i < 16; i++) bytes[i] = Math.floor(Math.random() * 256);
  }
  bytes[6] = (bytes[6] & 0x0f) | 0x40;
  bytes[8] = (bytes[8] & 0x3f) | 0x80;
  const hex = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}

/**
 * The ceiling and the actual delay of reconnect attempt `attempt` (1, 2, ...):
 * exponential growth from `base`, capped at `cap`, with full jitter (uniform in [0, ceiling)).
 */
export function backoffDelay(attempt, base, cap, random = Math.random) {
  const ceiling = Math.min(cap, base * 2 ** Math.max(0, attempt - 1));
  return Math.floor(random() * ceiling);
}

function defaultUrl() {
  const loc = globalThis.location;
  if (!loc || !loc.host) throw new Error("ChatClient needs a url option outside a browser page");
  return `${loc.protocol === "https:" ? "wss:" : "ws:"}//${loc.host}/ws`;
}

function defaultStorage() {
  try {
    return globalThis.sessionStorage ?? null;
  } catch {
    return null; // storage access can throw (sandboxed frames, blocked cookies)
  }
}

function defaultTimers() {
  return {
    setTimeout: globalThis.setTimeout.bind(globalThis),
    clearTimeout: globalThis.clearTimeout.bind(globalThis),
    setInterval: globalThis.setInterval.bind(globalThis),
    clearInterval: globalThis.clearInterval.bind(globalThis),
  };
}

export class ChatClient {
  /**
   * @param {object} [options] see DEFAULTS above, plus the injectables
   *   WebSocket, timers {setTimeout, clearTimeout, setInterval, clearInterval}, random () => [0, 1),
   *   now () => ms, storage (getItem/setItem or null), navigator ({onLine}),
   *   network (an EventTarget firing "online"/"offline"; default window),
   *   document (an EventTarget with visibilityState firing "visibilitychange"; default document).
   */
  constructor(options = {}) {
    this.options = { ...DEFAULTS, ...options };
    const o = this.options;
    this._WebSocket = o.WebSocket ?? globalThis.WebSocket;
    this._timers = o.timers ?? defaultTimers();
    this._random = o.random ?? Math.random;
    this._now = o.now ?? Date.now;
    this._storage = o.storage === undefined ? defaultStorage() : o.storage;
    this._navigator = o.navigator === undefined ? globalThis.navigator ?? null : o.navigator;
    this._network = o.network === undefined ? (globalThis.window ?? null) : o.network;
    this._document = o.document === undefined ? (globalThis.document ?? null) : o.document;
    this._url = o.url;
    this._clientId = o.clientId || this._storedClientId();

    this._handlers = new Map(); // dispatch-key -> Set of functions
    this._listeners = new Map(); // event type -> Set of functions
    this._pending = new Set(); // p-keys of questions not yet cleared
    this._seen = new Set(); // p-keys ever received, oldest first
    this._queue = [];
    this._unconfirmed = []; // answers written to the current socket, not yet cleared or refused
    this._state = "idle";
    this._ws = null;
    this._everOpened = false;
    this._stopped = true; // true until connect(), and again after close() or a final server close
    this._userClosed = false; // close() was called: send() refuses until connect()
    this._attempt = 0;
    this._forgotten = 0;
    this._openedAt = null; // when the current socket opened (null: not open)
    this._quick = false; // the attempt in flight is the quick first one after a drop
    this._openedByQuick = false; // the open socket came from such a quick attempt
    this._pingId = 0;
    this._pingTimer = null;
    this._retryTimer = null;
    this._openTimer = null;
    this._onOnline = () => this._networkBack();
    this._onOffline = () => this._networkGone();
    this._onVisibility = () => {
      if (this._document?.visibilityState === "visible") this._wakeUp();
    };
  }

  // ------------------------------------------------------------------ public API

  /** This app instance's client-id. */
  get clientId() {
    return this._clientId;
  }

  /** The connection state: idle, connecting, open, reconnecting, offline or closed. */
  get state() {
    return this._state;
  }

  /** The p-keys of questions asked and not yet cleared, oldest first. */
  get pendingKeys() {
    return [...this._pending];
  }

  /** How many outgoing messages wait for the socket to open. */
  get queued() {
    return this._queue.length;
  }

  /** Open the socket (and keep it open) until close(). Returns this. */
  connect() {
    if (!this._stopped) return this;
    this._stopped = false;
    this._userClosed = false;
    this._attempt = 0;
    this._forgotten = 0;
    if (this._network && typeof this._network.addEventListener === "function") {
      this._network.addEventListener("online", this._onOnline);
      this._network.addEventListener("offline", this._onOffline);
    }
    if (this._document && typeof this._document.addEventListener === "function") {
      this._document.addEventListener("visibilitychange", this._onVisibility);
    }
    this._open();
    return this;
  }

  /**
   * Reconnect now: after the server closed for good (4001, 4003), to skip a backoff wait, or
   * while offline (the person may know better than navigator.onLine).
   */
  reconnect() {
    if (this._stopped) return this.connect();
    this._attempt = 0;
    this._forgotten = 0;
    this._clearRetry();
    if (!this._ws) this._open();
    return this;
  }

  /** Close for good: tell the server to forget this client (close-channel), then close. */
  close() {
    if (this._stopped && this._userClosed) return;
    this._stopped = true;
    this._userClosed = true;
    this._stopTimers();
    if (this._network && typeof this._network.removeEventListener === "function") {
      this._network.removeEventListener("online", this._onOnline);
      this._network.removeEventListener("offline", this._onOffline);
    }
    if (this._document && typeof this._document.removeEventListener === "function") {
      this._document.removeEventListener("visibilitychange", this._onVisibility);
    }
    const ws = this._ws;
    this._ws = null;
    this._queue = [];
    this._unconfirmed = [];
    if (ws) {
      if (ws.readyState === WS_OPEN) this._write(ws, { "dispatch-key": "close-channel" });
      ws.close(CLOSE_NORMAL, "closed");
    }
    this._setState("closed", { reason: "closed" });
  }

  /**
   * Send {"dispatch-key": dispatchKey, ...payload}. Sent at once when open, otherwise queued
   * until the socket opens. Returns true when sent now, false when queued.
   */
  send(dispatchKey, payload = {}) {
    if (typeof dispatchKey !== "string" || !dispatchKey) throw new TypeError("dispatchKey must be a non-empty string");
    if (this._userClosed) throw new Error("ChatClient is closed; call connect() first");
    const message = { "dispatch-key": dispatchKey, ...payload };
    if (this._ws && this._ws.readyState === WS_OPEN) {
      this._write(this._ws, message);
      return true;
    }
    this._enqueue(message);
    return false;
  }

  /** Answer with text: domain-expert-says carrying every pending p-key. */
  answer(text) {
    return this.send("domain-expert-says", { "msg-text": String(text), "promise-keys": this.pendingKeys });
  }

  /** Answer with a table ({"table-headings": [...], "table-body": [...]}) and optional text. */
  answerTable(table, text = "") {
    return this.send("domain-expert-says", {
      "msg-text": String(text),
      table,
      "promise-keys": this.pendingKeys,
    });
  }

  /**
   * Call fn(message, {repeated}) for each server message with this dispatch-key ("*": every
   * message). `repeated` is true when the message carries a p-key already received.
   * Returns a function that unsubscribes.
   */
  on(dispatchKey, fn) {
    return this._subscribe(this._handlers, dispatchKey, fn);
  }

  /**
   * Call fn(detail) for a client event: state, connecting, open, reconnecting, offline, closed,
   * answer-rejected, question-withdrawn, queue-overflow, protocol-error, handler-error.
   * Returns a function that unsubscribes.
   */
  onEvent(type, fn) {
    return this._subscribe(this._listeners, type, fn);
  }

  // ------------------------------------------------------------------ connection

  _open() {
    const url = this._url ?? defaultUrl();
    const sep = url.includes("?") ? "&" : "?";
    const reconnect = this._everOpened;
    this._setState("connecting", { attempt: this._attempt, reconnect });
    let ws;
    try {
      ws = new this._WebSocket(`${url}${sep}client-id=${encodeURIComponent(this._clientId)}`, [JSON_SUBPROTOCOL]);
    } catch (error) {
      this._emit("protocol-error", { error });
      this._scheduleReconnect({ code: 0, reason: "constructor-failed" });
      return;
    }
    this._ws = ws;
    ws.onopen = () => ws === this._ws && this._opened(ws);
    ws.onmessage = (event) => ws === this._ws && this._received(event.data);
    ws.onclose = (event) => ws === this._ws && this._closed(event.code, event.reason);
    ws.onerror = () => {}; // a close event follows every error
    this._openTimer = this._timers.setTimeout(() => {
      this._openTimer = null;
      if (ws === this._ws && ws.readyState !== WS_OPEN) ws.close();
    }, this.options.connectTimeout);
  }

  _opened(ws) {
    this._clearOpenTimer();
    if (ws.protocol !== JSON_SUBPROTOCOL) {
      // The server did not accept JSON and would read our frames as EDN: stop rather than loop.
      this._ws = null;
      ws.close(CLOSE_NORMAL, "subprotocol");
      this._stopAfterServer({ code: 0, reason: "no-subprotocol" });
      return;
    }
    const reconnect = this._everOpened;
    this._everOpened = true;
    this._openedAt = this._now();
    this._openedByQuick = this._quick;
    this._quick = false;
    this._setState("open", { reconnect });
    this._pingTimer = this._timers.setInterval(() => this._ping(), this.options.pingInterval);
    if (reconnect && this._wantsResume()) {
      const payload = this.options.conversationId ? { "conversation-id": this.options.conversationId } : {};
      this._write(ws, { "dispatch-key": "resume-conversation", ...payload });
    }
    const queue = this._queue;
    this._queue = [];
    for (const message of queue) this._write(ws, message);
  }

  _closed(code, reason) {
    this._ws = null;
    this._stopTimers();
    this._unconfirmed = []; // their replies, if any, went down with the socket
    if (this._stopped) return;
    const wasOpen = this._openedAt !== null;
    const lived = wasOpen ? this._now() - this._openedAt : 0;
    const stable = lived >= this.options.stableAfter;
    this._openedAt = null;
    this._quick = false;
    if (stable) {
      this._attempt = 0;
      this._forgotten = 0;
    }
    // A dropped connection gets one quick attempt, unless it came from a quick attempt itself
    // and died young: then the server accepts and drops, and the backoff goes on.
    const restart = code === CLOSE_SERVICE_RESTART || code === CLOSE_SERVICE_RESTART_4012;
    // A server that stops says so: another process takes the client at once, even when this
    // connection itself came from a quick attempt (a rolling deploy moves a client more than once).
    const quick = wasOpen && (stable || restart || !this._openedByQuick);
    this._openedByQuick = false;
    if (restart) {
      this._scheduleReconnect({ code, reason: reason || "server-restart" }, quick);
    } else if (code === CLOSE_REPLACED) {
      this._stopAfterServer({ code, reason: "replaced" });
    } else if (code === CLOSE_CLIENT_ID_BOUND) {
      this._stopAfterServer({ code, reason: "client-id-bound" });
    } else if (code === CLOSE_FORGOTTEN) {
      // The server rejected every pending question; come back once, in case it was a sweep
      // that took a sleeping tab for gone. Forgotten again right away: stay closed.
      this._pending.clear();
      this._forgotten += 1;
      if (this._forgotten > 1) this._stopAfterServer({ code, reason: "forgotten" });
      else this._scheduleReconnect({ code, reason: reason || "forgotten" }, quick);
    } else {
      this._scheduleReconnect({ code, reason }, quick);
    }
  }

  _stopAfterServer(detail) {
    this._stopped = true;
    this._stopTimers();
    this._setState("closed", detail);
  }

  _scheduleReconnect(detail, quick = false) {
    if (this._navigator && this._navigator.onLine === false) {
      this._setState("offline", { ...detail, reason: "network" });
      return; // the "online" event reconnects
    }
    this._attempt += 1;
    const o = this.options;
    const cap = quick ? Math.min(o.reconnectCap, o.firstRetryCap) : o.reconnectCap;
    const delay = backoffDelay(this._attempt, o.reconnectBase, cap, this._random);
    this._quick = quick;
    this._setState("reconnecting", { ...detail, attempt: this._attempt, delay });
    this._retryTimer = this._timers.setTimeout(() => {
      this._retryTimer = null;
      if (!this._stopped && !this._ws) this._open();
    }, delay);
  }

  _networkBack() {
    if (this._stopped || this._ws) return;
    this._clearRetry();
    this._attempt = 0;
    this._open();
  }

  /** The page became visible again: a reconnecting or offline client tries at once. */
  _wakeUp() {
    if (this._state !== "reconnecting" && this._state !== "offline") return;
    this._networkBack();
  }

  _networkGone() {
    if (this._stopped) return;
    if (!this._ws) {
      this._clearRetry();
      this._setState("offline", { reason: "network" });
    }
    // An open socket stays: it closes by itself if the network is really gone.
  }

  _wantsResume() {
    const resume = this.options.resume;
    return typeof resume === "function" ? Boolean(resume()) : Boolean(resume);
  }

  _ping() {
    const ws = this._ws;
    if (ws && ws.readyState === WS_OPEN) {
      this._pingId += 1;
      this._write(ws, { "dispatch-key": "ping", "ping-id": this._pingId });
    }
  }

  // ------------------------------------------------------------------ messages

  _write(ws, message) {
    ws.send(JSON.stringify(message));
    if (message["dispatch-key"] === "domain-expert-says") {
      this._unconfirmed.push(message);
      // A server that never replies (or a reply lost to rate limiting) must not grow it forever.
      if (this._unconfirmed.length > this.options.maxQueue) this._unconfirmed.shift();
    }
  }

  _enqueue(message) {
    this._queue.push(message);
    while (this._queue.length > this.options.maxQueue) {
      const dropped = this._queue.shift();
      this._emit("queue-overflow", { dropped, maxQueue: this.options.maxQueue });
    }
  }

  _received(data) {
    let message;
    try {
      message = JSON.parse(data);
    } catch (error) {
      this._emit("protocol-error", { error, data });
      return;
    }
    if (!message || typeof message !== "object" || Array.isArray(message) || typeof message["dispatch-key"] !== "string") {
      this._emit("protocol-error", { error: new Error("not a message map"), data });
      return;
    }
    const key = message["dispatch-key"];
    let repeated = false;
    const pKey = message["p-key"];
    if (typeof pKey === "string" && pKey) {
      repeated = this._seen.has(pKey);
      this._remember(pKey);
      this._pending.add(pKey);
    }
    if (key === "clear-promise-keys" && Array.isArray(message["promise-keys"])) {
      this._cleared(message);
    } else if (key === "error" && message["in-reply-to"] === "domain-expert-says") {
      this._refused(message);
    } else if (key === "alive?") {
      this._write(this._ws, { "dispatch-key": "alive-confirm" });
    }
    const info = { repeated };
    this._dispatch(this._handlers.get(key), message, info);
    this._dispatch(this._handlers.get("*"), message, info);
  }

  /**
   * clear-promise-keys: without a reason it confirms the oldest unconfirmed answer naming one of
   * the keys; with a reason (cancelled, timeout) the server withdrew those questions.
   */
  _cleared(message) {
    const keys = message["promise-keys"].map(String);
    const reason = message.reason;
    for (const pKey of keys) {
      const wasPending = this._pending.delete(pKey);
      if (reason) {
        const description = typeof message.description === "string" ? message.description : "";
        this._emit("question-withdrawn", { pKey, reason: String(reason), description, wasPending });
      }
    }
    if (reason) return;
    const i = this._unconfirmed.findIndex((m) => (m["promise-keys"] ?? []).some((k) => keys.includes(k)));
    if (i >= 0) this._unconfirmed.splice(i, 1);
  }

  /**
   * An error in reply to domain-expert-says: the server handles answers in order, so it refers
   * to the oldest answer written to this socket and not yet confirmed.
   */
  _refused(message) {
    const answer = this._unconfirmed.shift();
    if (!answer) return;
    if (message.error === "no-matching-question") {
      for (const k of answer["promise-keys"] ?? []) this._pending.delete(k); // the server has none of them
    }
    this._emit("answer-rejected", {
      text: answer["msg-text"],
      table: answer.table ?? null,
      promiseKeys: answer["promise-keys"] ?? [],
      error: String(message.error ?? ""),
      description: typeof message.description === "string" ? message.description : "",
    });
  }

  _remember(pKey) {
    this._seen.delete(pKey);
    this._seen.add(pKey);
    while (this._seen.size > this.options.maxSeenKeys) this._seen.delete(this._seen.values().next().value);
  }

  _dispatch(fns, message, info) {
    if (!fns) return;
    for (const fn of [...fns]) {
      try {
        fn(message, info);
      } catch (error) {
        this._reportHandlerError(error, message);
      }
    }
  }

  _reportHandlerError(error, message) {
    const listeners = this._listeners.get("handler-error");
    if (listeners && listeners.size) this._emit("handler-error", { error, message });
    else if (typeof globalThis.reportError === "function") globalThis.reportError(error);
  }

  // ------------------------------------------------------------------ events and timers

  _subscribe(map, key, fn) {
    if (typeof fn !== "function") throw new TypeError("handler must be a function");
    if (!map.has(key)) map.set(key, new Set());
    map.get(key).add(fn);
    return () => {
      const fns = map.get(key);
      if (fns) fns.delete(fn);
    };
  }

  _emit(type, detail) {
    const fns = this._listeners.get(type);
    if (!fns) return;
    for (const fn of [...fns]) {
      try {
        fn(detail);
      } catch (error) {
        if (type !== "handler-error") this._reportHandlerError(error, null);
      }
    }
  }

  _setState(state, detail = {}) {
    const previous = this._state;
    this._state = state;
    const full = { ...detail, state, previous };
    this._emit(state, full);
    this._emit("state", full);
  }

  _storedClientId() {
    const key = this.options.storageKey;
    try {
      const found = this._storage?.getItem(key);
      if (found) return found;
    } catch {
      // unreadable storage: a fresh id for this instance only
    }
    const id = randomUUID();
    try {
      this._storage?.setItem(key, id);
    } catch {
      // full or blocked storage: the id lives as long as this instance
    }
    return id;
  }

  _clearRetry() {
    if (this._retryTimer !== null) this._timers.clearTimeout(this._retryTimer);
    this._retryTimer = null;
  }

  _clearOpenTimer() {
    if (this._openTimer !== null) this._timers.clearTimeout(this._openTimer);
    this._openTimer = null;
  }

  _stopTimers() {
    this._clearRetry();
    this._clearOpenTimer();
    if (this._pingTimer !== null) this._timers.clearInterval(this._pingTimer);
    this._pingTimer = null;
  }
}
