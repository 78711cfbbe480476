// Unit tests of the browser client (chat_ws/static/chat_ws/chat_ws.js) with injected fakes.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  ChatClient,
  JSON_SUBPROTOCOL,
  backoffDelay,
  randomUUID,
} from "../../chat_ws/static/chat_ws/chat_ws.js";
import { FakeStorage, makeClient } from "./fakes.mjs";

function connected(options = {}) {
  const setup = makeClient(ChatClient, options);
  setup.client.connect();
  setup.socket().serverAccept();
  return setup;
}

test("connects to the url with the client-id and the JSON subprotocol", () => {
  const { client, socket } = makeClient(ChatClient, { clientId: "abc-1" });
  client.connect();
  assert.equal(socket().url, "ws://test/ws?client-id=abc-1");
  assert.deepEqual(socket().protocols, [JSON_SUBPROTOCOL]);
  assert.equal(client.state, "connecting");
  socket().serverAccept();
  assert.equal(client.state, "open");
});

test("a url with a query gets the client-id appended with &", () => {
  const { client, socket } = makeClient(ChatClient, { url: "wss://h/ws?x=1", clientId: "id 2" });
  client.connect();
  assert.equal(socket().url, "wss://h/ws?x=1&client-id=id%202");
});

test("the client-id is kept in storage: same storage, same id; new storage, new id", () => {
  const storage = new FakeStorage();
  const first = makeClient(ChatClient, { storage }).client;
  const again = makeClient(ChatClient, { storage }).client;
  const other = makeClient(ChatClient, { storage: new FakeStorage() }).client;
  assert.match(first.clientId, /^[0-9a-f]{8}-[0-9a-f]{4}-4[0-9a-f]{3}-[89ab][0-9a-f]{3}-[0-9a-f]{12}$/);
  assert.equal(storage.getItem("chat_ws.client-id"), first.clientId);
  assert.equal(again.clientId, first.clientId);
  assert.notEqual(other.clientId, first.clientId);
});

test("the storage key is configurable and broken storage still yields an id", () => {
  const storage = new FakeStorage({ mine: "kept-id" });
  assert.equal(makeClient(ChatClient, { storage, storageKey: "mine" }).client.clientId, "kept-id");
  const throwing = { getItem() { throw new Error("denied"); }, setItem() { throw new Error("denied"); } };
  assert.ok(makeClient(ChatClient, { storage: throwing }).client.clientId);
});

test("randomUUID falls back to getRandomValues where randomUUID is missing", () => {
  const id = randomUUID({ getRandomValues: (bytes) => bytes.fill(0xff) });
  assert.equal(id, "ffffffff-ffff-4fff-bfff-ffffffffffff");
});

test("p-keys are added when a message carries one and removed on clear-promise-keys", () => {
  const { client, socket } = connected();
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "Q1", "p-key": "promise-1" });
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "Q2", "p-key": "promise-2" });
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "hello" });
  assert.deepEqual(client.pendingKeys, ["promise-1", "promise-2"]);
  socket().serverSend({ "dispatch-key": "clear-promise-keys", "promise-keys": ["promise-1", "promise-9"] });
  assert.deepEqual(client.pendingKeys, ["promise-2"]);
});

test("answer() sends domain-expert-says with msg-text and every pending key", () => {
  const { client, socket } = connected();
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "Q1", "p-key": "promise-1" });
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "Q2", "p-key": "promise-2" });
  assert.equal(client.answer("Bicycles."), true);
  assert.deepEqual(socket().messages.at(-1), {
    "dispatch-key": "domain-expert-says",
    "msg-text": "Bicycles.",
    "promise-keys": ["promise-1", "promise-2"],
  });
});

test("answerTable() adds the table", () => {
  const { client, socket } = connected();
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "Q", "p-key": "promise-7" });
  const table = { "table-headings": [{ title: "A", key: "a" }], "table-body": [{ a: 1 }] };
  client.answerTable(table, "here");
  assert.deepEqual(socket().messages.at(-1), {
    "dispatch-key": "domain-expert-says",
    "msg-text": "here",
    table,
    "promise-keys": ["promise-7"],
  });
});

test("on() routes by dispatch-key, '*' sees everything, and unsubscribing stops delivery", () => {
  const { client, socket } = connected();
  const got = [];
  const off = client.on("load-table", (m) => got.push(["table", m.table]));
  client.on("*", (m) => got.push(["any", m["dispatch-key"]]));
  socket().serverSend({ "dispatch-key": "load-table", table: { x: 1 } });
  off();
  socket().serverSend({ "dispatch-key": "load-table", table: { x: 2 } });
  assert.deepEqual(got, [["table", { x: 1 }], ["any", "load-table"], ["any", "load-table"]]);
});

test("a question re-sent with a known p-key is flagged repeated", () => {
  const { client, socket } = connected();
  const seen = [];
  client.on("iviewr-says", (m, info) => seen.push([m.text, info.repeated]));
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "Q1", "p-key": "promise-1" });
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "Q1", "p-key": "promise-1" });
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "Q2", "p-key": "promise-2" });
  assert.deepEqual(seen, [["Q1", false], ["Q1", true], ["Q2", false]]);
});

test("alive? is answered with alive-confirm", () => {
  const { socket } = connected();
  socket().serverSend({ "dispatch-key": "alive?" });
  assert.deepEqual(socket().messages, [{ "dispatch-key": "alive-confirm" }]);
});

test("pings every pingInterval with an increasing ping-id, only while open", () => {
  const { clock, socket } = connected({ pingInterval: 1000 });
  clock.advance(3000);
  assert.deepEqual(socket().messages.map((m) => m["ping-id"]), [1, 2, 3]);
  assert.ok(socket().messages.every((m) => m["dispatch-key"] === "ping"));
  socket().serverClose(1006);
  const before = socket().sent.length;
  clock.advance(200); // the reconnect timer fires: a new socket, not yet open
  clock.advance(5000);
  assert.equal(socket().sent.length, 0);
  socket().serverAccept();
  clock.advance(1000);
  assert.equal(socket().messages.at(-1)["ping-id"], 4);
  assert.equal(before, 3);
});

test("backoffDelay grows exponentially, is capped, and stays within [0, ceiling)", () => {
  const ceilings = [1, 2, 3, 4, 5, 6, 7, 8].map((n) => backoffDelay(n, 500, 10000, () => 0.999999));
  assert.deepEqual(ceilings, [499, 999, 1999, 3999, 7999, 9999, 9999, 9999]);
  for (let n = 1; n < 12; n++) {
    assert.equal(backoffDelay(n, 500, 10000, () => 0), 0);
    const d = backoffDelay(n, 500, 10000, Math.random);
    assert.ok(d >= 0 && d < Math.min(10000, 500 * 2 ** (n - 1)), `attempt ${n}: ${d}`);
  }
});

test("reconnect delays grow with full jitter and the cap while the server stays away", () => {
  const { client, clock, socket, events } = connected({ reconnectBase: 100, reconnectCap: 1000, random: () => 0.5 });
  socket().serverClose(1006);
  const delays = [];
  for (let i = 0; i < 7; i++) {
    const last = events.at(-1);
    assert.equal(last.state, "reconnecting");
    assert.equal(last.attempt, i + 1);
    delays.push(last.delay);
    clock.advance(last.delay);
    assert.equal(client.state, "connecting");
    socket().serverClose(1006); // refused again
  }
  assert.deepEqual(delays, [50, 100, 200, 400, 500, 500, 500]);
});

test("the backoff resets after a connection that stayed up, not after a flapping one", () => {
  const { clock, socket, events } = connected({ reconnectBase: 100, reconnectCap: 10000, stableAfter: 5000, random: () => 0.5 });
  socket().serverClose(1006);
  clock.advance(events.at(-1).delay);
  socket().serverAccept();
  socket().serverClose(1011); // lived 0 ms
  assert.equal(events.at(-1).attempt, 2);
  clock.advance(events.at(-1).delay);
  socket().serverAccept();
  clock.advance(6000);
  socket().serverClose(1001);
  assert.equal(events.at(-1).attempt, 1);
});

test("messages sent while disconnected are queued and flushed in order once open", () => {
  const { client, clock, socket, events } = connected();
  socket().serverClose(1006);
  assert.equal(client.send("one"), false);
  assert.equal(client.send("two", { n: 2 }), false);
  assert.equal(client.queued, 2);
  clock.advance(events.at(-1).delay);
  socket().serverAccept();
  const keys = socket().messages.map((m) => m["dispatch-key"]);
  assert.deepEqual(keys, ["resume-conversation", "one", "two"]);
  assert.deepEqual(socket().messages[2], { "dispatch-key": "two", n: 2 });
  assert.equal(client.queued, 0);
});

test("messages sent before the first open are flushed without resume-conversation", () => {
  const { client, socket } = makeClient(ChatClient);
  client.connect();
  client.send("start-conversation");
  socket().serverAccept();
  assert.deepEqual(socket().messages, [{ "dispatch-key": "start-conversation" }]);
});

test("the queue is bounded: the oldest message is dropped and an event reports it", () => {
  const { client, clock, socket, events } = connected({ maxQueue: 3 });
  const dropped = [];
  client.onEvent("queue-overflow", (d) => dropped.push(d.dropped["dispatch-key"]));
  socket().serverClose(1006);
  for (const key of ["m1", "m2", "m3", "m4", "m5"]) client.send(key);
  assert.equal(client.queued, 3);
  assert.deepEqual(dropped, ["m1", "m2"]);
  clock.advance(events.at(-1).delay);
  socket().serverAccept();
  assert.deepEqual(socket().messages.map((m) => m["dispatch-key"]), ["resume-conversation", "m3", "m4", "m5"]);
});

test("resume-conversation is sent after a reconnect only, with the conversation-id option", () => {
  const { clock, socket, events, WebSocket } = connected({ conversationId: "process" });
  assert.deepEqual(WebSocket.instances[0].messages, []);
  socket().serverClose(1001);
  clock.advance(events.at(-1).delay);
  socket().serverAccept();
  assert.deepEqual(socket().messages, [{ "dispatch-key": "resume-conversation", "conversation-id": "process" }]);
  const opens = events.filter((e) => e.state === "open").map((e) => e.reconnect);
  assert.deepEqual(opens, [false, true]);
});

test("resume can be disabled or decided by a function at reconnect time", () => {
  for (const [resume, expected] of [[false, 0], [() => false, 0], [() => true, 1]]) {
    const { clock, socket, events } = connected({ resume });
    socket().serverClose(1006);
    clock.advance(events.at(-1).delay);
    socket().serverAccept();
    assert.equal(socket().messages.filter((m) => m["dispatch-key"] === "resume-conversation").length, expected);
  }
});

test("4001 (replaced by another tab) and 4003 (bound to another user) never reconnect", () => {
  for (const [code, reason] of [[4001, "replaced"], [4003, "client-id-bound"]]) {
    const { client, clock, socket, events, WebSocket } = connected();
    socket().serverClose(code);
    assert.equal(client.state, "closed");
    assert.equal(events.at(-1).code, code);
    assert.equal(events.at(-1).reason, reason);
    clock.advance(10 * 60 * 1000);
    assert.equal(WebSocket.instances.length, 1);
    assert.deepEqual(clock.pendingDelays(), []);
    client.reconnect(); // an explicit user action opens again
    assert.equal(WebSocket.instances.length, 2);
  }
});

test("4002 (forgotten) clears pending keys and reconnects once; forgotten again at once: closed", () => {
  const { client, clock, socket, events, WebSocket } = connected();
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "Q", "p-key": "promise-1" });
  socket().serverClose(4002);
  assert.deepEqual(client.pendingKeys, []);
  assert.equal(client.state, "reconnecting");
  clock.advance(events.at(-1).delay);
  socket().serverAccept();
  socket().serverClose(4002);
  assert.equal(client.state, "closed");
  assert.equal(events.at(-1).reason, "forgotten");
  clock.advance(60000);
  assert.equal(WebSocket.instances.length, 2);
});

test("4002 after a long-lived connection reconnects again", () => {
  const { client, clock, socket, events } = connected({ stableAfter: 1000 });
  socket().serverClose(4002);
  clock.advance(events.at(-1).delay);
  socket().serverAccept();
  clock.advance(60000);
  socket().serverClose(4002);
  assert.equal(client.state, "reconnecting");
});

test("close() sends close-channel, closes with 1000 and stops every timer", () => {
  const { client, clock, socket, events } = connected();
  const ws = socket();
  client.close();
  assert.deepEqual(ws.messages.at(-1), { "dispatch-key": "close-channel" });
  assert.equal(ws.closedWith.code, 1000);
  assert.equal(client.state, "closed");
  assert.equal(clock.timers.size, 0);
  assert.throws(() => client.send("ping"), /closed/);
  assert.equal(events.at(-1).reason, "closed");
});

test("a socket that never opens is abandoned after connectTimeout and retried", () => {
  const { client, clock, WebSocket } = makeClient(ChatClient, { connectTimeout: 2000 });
  client.connect();
  clock.advance(2000);
  assert.equal(client.state, "reconnecting");
  clock.advance(30000);
  assert.ok(WebSocket.instances.length >= 2);
});

test("offline: no retry timers while the network is gone; online reconnects at once", () => {
  const { client, clock, socket, network, WebSocket } = connected();
  network.goOffline();
  assert.equal(client.state, "open"); // an open socket is left to notice by itself
  socket().serverClose(1006);
  assert.equal(client.state, "offline");
  clock.advance(120000);
  assert.equal(WebSocket.instances.length, 1);
  network.goOnline();
  assert.equal(client.state, "connecting");
  assert.equal(WebSocket.instances.length, 2);
});

test("a server that refuses the JSON subprotocol stops the client instead of looping", () => {
  const { client, socket, clock, WebSocket } = makeClient(ChatClient);
  client.connect();
  socket().serverAccept("");
  assert.equal(client.state, "closed");
  clock.advance(60000);
  assert.equal(WebSocket.instances.length, 1);
});

test("bad frames and throwing handlers are reported as events, not thrown", () => {
  const { client, socket } = connected();
  const errors = [];
  client.onEvent("protocol-error", () => errors.push("protocol"));
  client.onEvent("handler-error", (d) => errors.push(d.error.message));
  client.on("iviewr-says", () => {
    throw new Error("boom");
  });
  socket().serverSend("not json");
  socket().serverSend("[1,2]");
  socket().serverSend({ "dispatch-key": "iviewr-says", text: "x" });
  assert.deepEqual(errors, ["protocol", "protocol", "boom"]);
});

test("two clients on one page keep separate state", () => {
  const a = connected({ clientId: "a" });
  const b = connected({ clientId: "b" });
  a.socket().serverSend({ "dispatch-key": "iviewr-says", text: "Q", "p-key": "promise-a" });
  assert.deepEqual(a.client.pendingKeys, ["promise-a"]);
  assert.deepEqual(b.client.pendingKeys, []);
});
