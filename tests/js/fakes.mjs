// Fakes for the browser client's injectables: a clock with timers, a WebSocket, storage, network.

export class FakeClock {
  constructor() {
    this.time = 0;
    this.nextId = 1;
    this.timers = new Map(); // id -> {at, fn, every}
  }

  now = () => this.time;

  get api() {
    return {
      setTimeout: (fn, ms) => this._add(fn, ms, null),
      clearTimeout: (id) => this.timers.delete(id),
      setInterval: (fn, ms) => this._add(fn, ms, ms),
      clearInterval: (id) => this.timers.delete(id),
    };
  }

  _add(fn, ms, every) {
    const id = this.nextId++;
    this.timers.set(id, { at: this.time + Math.max(0, ms), fn, every });
    return id;
  }

  /** Delays of the pending one-shot timers, soonest first. */
  pendingDelays() {
    return [...this.timers.values()].filter((t) => t.every === null).map((t) => t.at - this.time).sort((a, b) => a - b);
  }

  /** Move time forward by ms, running every timer that falls due, in order. */
  advance(ms) {
    const end = this.time + ms;
    for (;;) {
      let due = null;
      for (const [id, t] of this.timers) {
        if (t.at <= end && (due === null || t.at < due[1].at)) due = [id, t];
      }
      if (due === null) break;
      const [id, t] = due;
      this.time = t.at;
      if (t.every === null) this.timers.delete(id);
      else t.at += t.every;
      t.fn();
    }
    this.time = end;
  }
}

export function fakeWebSocketClass() {
  class FakeWebSocket {
    static instances = [];
    static CONNECTING = 0;
    static OPEN = 1;
    static CLOSED = 3;

    constructor(url, protocols) {
      this.url = url;
      this.protocols = protocols;
      this.protocol = "";
      this.readyState = 0;
      this.sent = [];
      this.closedWith = null;
      FakeWebSocket.instances.push(this);
    }

    /** Messages the client sent, decoded. */
    get messages() {
      return this.sent.map((text) => JSON.parse(text));
    }

    send(text) {
      if (this.readyState !== 1) throw new Error("send on a socket that is not open");
      this.sent.push(text);
    }

    close(code = 1005, reason = "") {
      if (this.readyState === 3) return;
      this.closedWith = { code, reason };
      const wasOpen = this.readyState === 1;
      this.readyState = 3;
      this.onclose?.({ code: wasOpen ? code : 1006, reason });
    }

    // The server's side of the fake.
    serverAccept(protocol = "chat_ws.json") {
      this.protocol = protocol;
      this.readyState = 1;
      this.onopen?.({});
    }

    serverSend(message) {
      this.onmessage?.({ data: typeof message === "string" ? message : JSON.stringify(message) });
    }

    serverClose(code, reason = "") {
      this.readyState = 3;
      this.onclose?.({ code, reason });
    }
  }
  return FakeWebSocket;
}

export class FakeStorage {
  constructor(entries = {}) {
    this.map = new Map(Object.entries(entries));
  }
  getItem(key) {
    return this.map.has(key) ? this.map.get(key) : null;
  }
  setItem(key, value) {
    this.map.set(key, String(value));
  }
}

export class FakeNetwork extends EventTarget {
  constructor() {
    super();
    this.onLine = true;
  }
  goOffline() {
    this.onLine = false;
    this.dispatchEvent(new Event("offline"));
  }
  goOnline() {
    this.onLine = true;
    this.dispatchEvent(new Event("online"));
  }
}

export class FakeDocument extends EventTarget {
  constructor() {
    super();
    this.visibilityState = "visible";
  }
  hide() {
    this.visibilityState = "hidden";
    this.dispatchEvent(new Event("visibilitychange"));
  }
  show() {
    this.visibilityState = "visible";
    this.dispatchEvent(new Event("visibilitychange"));
  }
}

/** A ChatClient wired to fakes; returns the client and the fakes. */
export function makeClient(ChatClient, options = {}) {
  const clock = new FakeClock();
  const WebSocket = fakeWebSocketClass();
  const storage = new FakeStorage();
  const network = new FakeNetwork();
  const document = new FakeDocument();
  const client = new ChatClient({
    url: "ws://test/ws",
    WebSocket,
    timers: clock.api,
    now: clock.now,
    random: () => 0.5,
    storage,
    navigator: network,
    network,
    document,
    ...options,
  });
  const events = [];
  client.onEvent("state", (detail) => events.push(detail));
  const socket = () => WebSocket.instances[WebSocket.instances.length - 1];
  return { client, clock, WebSocket, storage, network, document, events, socket };
}
