// The browser client after something went wrong: quick reconnects, refused answers, withdrawn questions.
import { test } from "node:test";
import assert from "node:assert/strict";

import {
  CLOSE_SERVICE_RESTART,
  CLOSE_SERVICE_RESTART_4012,
  ChatClient,
} from "../../chat_ws/static/chat_ws/chat_ws.js";
import { makeClient } from "./fakes.mjs";

const ALMOST_ONE = () => 0.999999; // the longest delay full jitter can pick

function connected(options = {}) {
  const setup = makeClient(ChatClient, options);
  setup.client.connect();
  setup.socket().serverAccept();
  return setup;
}

/** Refuse `n` attempts in a row, each after its full delay; return the delays. */
function refuse(setup, n) {
  const delays = [];
  for (let i = 0; i < n; i++) {
    const { delay } = setup.events.at(-1);
    delays.push(delay);
    setup.clock.advance(delay);
    assert.equal(setup.client.state, "connecting");
    setup.socket().close(); // refused before it opened
  }
  return delays;
}

// ------------------------------------------------------------------ reconnecting

test("the first attempt after a drop comes within 1 s, even with a slow backoff", () => {
  const setup = connected({ reconnectBase: 5000, random: ALMOST_ONE });
  setup.socket().serverClose(1006);
  assert.equal(setup.events.at(-1).state, "reconnecting");
  assert.ok(setup.events.at(-1).delay < 1000, `first delay ${setup.events.at(-1).delay}`);
  const later = refuse(setup, 3).slice(1);
  assert.deepEqual(later, [9999, 19999], "later attempts keep the exponential backoff");
});

test("a drop soon after a reconnect still gets its quick first attempt", () => {
  const setup = connected({ reconnectBase: 500, reconnectCap: 30000, random: ALMOST_ONE });
  setup.socket().serverClose(1001); // a server restart
  refuse(setup, 5); // down for a while: the backoff grew to attempt 6
  setup.clock.advance(setup.events.at(-1).delay);
  setup.socket().serverAccept(); // back, by a backed-off attempt
  setup.clock.advance(2000); // shorter than stableAfter
  setup.socket().serverClose(1001); // a second restart (a rolling deploy)
  assert.ok(setup.events.at(-1).delay < 1000, `first delay ${setup.events.at(-1).delay}`);
  assert.equal(setup.events.at(-1).attempt, 7);
});

test("a server that accepts and drops at once is not hammered by quick attempts", () => {
  const setup = connected({ reconnectBase: 500, reconnectCap: 30000, random: ALMOST_ONE });
  setup.socket().serverClose(1006);
  const delays = [];
  for (let i = 0; i < 8; i++) {
    const { delay } = setup.events.at(-1);
    delays.push(delay);
    setup.clock.advance(delay);
    setup.socket().serverAccept();
    setup.socket().serverClose(1011); // accepted and dropped at once
  }
  // Quick attempts alternate with backed-off ones, which keep growing to the cap.
  assert.deepEqual(delays, [499, 999, 999, 3999, 999, 15999, 999, 29999]);
});

test("1012 and 4012 (the server process stops) reconnect within 1 s, even right after a quick reconnect", () => {
  assert.deepEqual([CLOSE_SERVICE_RESTART, CLOSE_SERVICE_RESTART_4012], [1012, 4012]);
  for (const code of [1012, 4012]) {
    const setup = connected({ reconnectBase: 5000, random: ALMOST_ONE }); // a slow backoff
    setup.socket().serverClose(code); // a stopping server (a rolling deploy)
    assert.equal(setup.events.at(-1).reason, "server-restart");
    assert.ok(setup.events.at(-1).delay < 1000, `first delay ${setup.events.at(-1).delay}`);
    setup.clock.advance(setup.events.at(-1).delay);
    setup.socket().serverAccept(); // taken by another process, through the quick attempt
    setup.clock.advance(200); // far shorter than stableAfter
    setup.socket().serverClose(code); // and that process stops too
    const { state, code: closed, reason, delay } = setup.events.at(-1);
    assert.deepEqual([state, closed, reason], ["reconnecting", code, "server-restart"]);
    assert.ok(delay < 1000, `second delay ${delay}`); // another close would have backed off
    setup.clock.advance(delay);
    assert.equal(setup.client.state, "connecting");
  }
});

test("the online event reconnects a reconnecting client at once", () => {
  const setup = connected({ reconnectBase: 60000, random: ALMOST_ONE });
  const { client, network, WebSocket } = setup;
  setup.socket().serverClose(1006);
  refuse(setup, 1);
  assert.equal(client.state, "reconnecting");
  assert.ok(setup.events.at(-1).delay > 20000);
  network.dispatchEvent(new Event("online"));
  assert.equal(client.state, "connecting");
  assert.equal(WebSocket.instances.length, 3);
});

test("becoming visible reconnects a reconnecting or offline client at once, nothing else", () => {
  const setup = connected({ reconnectBase: 60000, random: ALMOST_ONE });
  const { client, clock, document, network, WebSocket } = setup;
  document.hide();
  document.show();
  assert.equal(WebSocket.instances.length, 1, "an open client stays as it is");
  setup.socket().serverClose(1006);
  refuse(setup, 1);
  assert.equal(client.state, "reconnecting");
  assert.ok(setup.events.at(-1).delay > 20000);
  document.hide();
  assert.equal(client.state, "reconnecting", "hiding does nothing");
  document.show();
  assert.equal(client.state, "connecting");
  assert.equal(WebSocket.instances.length, 3);
  setup.socket().serverAccept();
  assert.equal(client.state, "open");
  assert.deepEqual(clock.pendingDelays().filter((d) => d > 20000), [], "no stale retry timer");

  network.onLine = false;
  setup.socket().serverClose(1006);
  assert.equal(client.state, "offline");
  document.show();
  assert.equal(client.state, "connecting", "visible again: one attempt even when offline");
});

test("becoming visible leaves a closed client closed", () => {
  const { client, document, socket, WebSocket } = connected();
  socket().serverClose(4001);
  document.show();
  assert.equal(client.state, "closed");
  assert.equal(WebSocket.instances.length, 1);
  client.close();
  document.show();
  assert.equal(WebSocket.instances.length, 1);
});

test("reconnect() skips the backoff wait and starts again from attempt 1", () => {
  const setup = connected({ reconnectBase: 60000, random: ALMOST_ONE });
  setup.socket().serverClose(1006);
  refuse(setup, 2);
  assert.equal(setup.client.state, "reconnecting");
  setup.client.reconnect();
  assert.equal(setup.client.state, "connecting");
  setup.socket().close();
  assert.equal(setup.events.at(-1).attempt, 1);
});

// ------------------------------------------------------------------ refused answers

function asked(socket, pKey, text = "Q") {
  socket().serverSend({ "dispatch-key": "iviewr-says", text, "p-key": pKey });
}

const NO_MATCH = {
  "dispatch-key": "error",
  error: "no-matching-question",
  description: "no pending question matches the answer's promise-keys",
  "in-reply-to": "domain-expert-says",
};

test("an answer queued offline and refused as no-matching-question comes back as answer-rejected", () => {
  const { client, clock, socket, events } = connected();
  const rejected = [];
  client.onEvent("answer-rejected", (detail) => rejected.push(detail));
  asked(socket, "promise-1");
  socket().serverClose(1006);
  client.answer("Bicycles, about 40 kinds.");
  clock.advance(events.at(-1).delay);
  socket().serverAccept(); // a new server that lost promise-1
  asked(socket, "promise-2");
  socket().serverSend(NO_MATCH);
  assert.deepEqual(rejected, [
    {
      text: "Bicycles, about 40 kinds.",
      table: null,
      promiseKeys: ["promise-1"],
      error: "no-matching-question",
      description: "no pending question matches the answer's promise-keys",
    },
  ]);
  assert.deepEqual(client.pendingKeys, ["promise-2"], "the refused keys are dropped, the new one stays");
  client.answer("Bicycles, about 40 kinds.");
  assert.deepEqual(socket().messages.at(-1)["promise-keys"], ["promise-2"]);
});

test("answers are confirmed by clear-promise-keys in order: an error names the right one", () => {
  const { client, socket } = connected();
  const rejected = [];
  client.onEvent("answer-rejected", ({ text }) => rejected.push(text));
  asked(socket, "promise-1");
  client.answer("first");
  asked(socket, "promise-2");
  client.answer("second");
  client.answer("third");
  socket().serverSend({ "dispatch-key": "clear-promise-keys", "promise-keys": ["promise-1"] });
  socket().serverSend({ "dispatch-key": "clear-promise-keys", "promise-keys": ["promise-2"] });
  socket().serverSend(NO_MATCH);
  socket().serverSend(NO_MATCH); // nothing left to refuse
  assert.deepEqual(rejected, ["third"]);
});

test("other errors do not refuse an answer; answers of a dead socket are not blamed", () => {
  const { client, clock, socket, events } = connected();
  const rejected = [];
  client.onEvent("answer-rejected", ({ text }) => rejected.push(text));
  asked(socket, "promise-1");
  client.answer("lost with the socket");
  socket().serverSend({ "dispatch-key": "error", error: "rate-limited", description: "slow down" });
  socket().serverSend({ ...NO_MATCH, "in-reply-to": "start-conversation" });
  socket().serverClose(1006);
  clock.advance(events.at(-1).delay);
  socket().serverAccept();
  socket().serverSend(NO_MATCH);
  assert.deepEqual(rejected, []);
});

// ------------------------------------------------------------------ withdrawn questions

test("clear-promise-keys with a reason emits question-withdrawn; a plain clear does not", () => {
  const { client, socket } = connected();
  const withdrawn = [];
  client.onEvent("question-withdrawn", (detail) => withdrawn.push(detail));
  asked(socket, "promise-1");
  asked(socket, "promise-2");
  socket().serverSend({ "dispatch-key": "clear-promise-keys", "promise-keys": ["promise-1"] });
  socket().serverSend({
    "dispatch-key": "clear-promise-keys",
    "promise-keys": ["promise-2"],
    reason: "cancelled",
    description: "cancelled by an administrator",
  });
  socket().serverSend({ "dispatch-key": "clear-promise-keys", "promise-keys": ["promise-9"], reason: "timeout" });
  assert.deepEqual(withdrawn, [
    { pKey: "promise-2", reason: "cancelled", description: "cancelled by an administrator", wasPending: true },
    { pKey: "promise-9", reason: "timeout", description: "", wasPending: false },
  ]);
  assert.deepEqual(client.pendingKeys, []);
});

test("a withdrawal does not confirm an answer: the answer's refusal is still reported", () => {
  const { client, socket } = connected();
  const rejected = [];
  client.onEvent("answer-rejected", ({ text }) => rejected.push(text));
  asked(socket, "promise-1");
  client.answer("too late");
  socket().serverSend({ "dispatch-key": "clear-promise-keys", "promise-keys": ["promise-1"], reason: "cancelled" });
  socket().serverSend(NO_MATCH);
  assert.deepEqual(rejected, ["too late"]);
});
