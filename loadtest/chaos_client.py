"""The chaos scenario's clients: each runs the demo interview as the browser page does.

A lane runs one interview after another, each under a fresh client-id. An interview connects to
a random server, sends ``start-conversation`` once and answers every question (one p-key per
answer, the text ``<client-id>/<question-id>``) until ``load-table``; then it leaves with
``close-channel`` and waits for the server's 4002. A dropped socket is reopened on a random
other server with the browser client's backoff (chat_ws.js), followed by
``resume-conversation``. Everything seen goes into the interview's
:class:`~loadtest.ledger.InterviewRecord`.
"""

from __future__ import annotations

import asyncio
import json
import logging
import random
import time
from dataclasses import dataclass
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from loadtest.ledger import LEAVE_CODE, Asked, Cleared, Drop, InterviewRecord, Sent, Told

logger = logging.getLogger(__name__)

JSON_SUBPROTOCOL = "chat_ws.json"  # the browser client's subprotocol (chat_ws.codec)
MAX_FRAME = 1 << 20  # bytes per frame the client accepts
WS_4001_REPLACED = 4001
WS_4003_CLIENT_ID_BOUND = 4003
NO_CLOSE_FRAME = 1006
MAX_RETRIES = 5  # times a refused answer (other than no-matching-question) is sent again
RETRY_AFTER = 1.0  # seconds before it is


@dataclass(frozen=True)
class Policy:
    """The browser client's reconnect options (chat_ws.js DEFAULTS), in seconds, and the tool's
    patience."""

    reconnect_base: float = 0.5  # first reconnect delay ceiling
    first_retry_cap: float = 1.0  # the first attempt after a dropped connection comes within this
    reconnect_cap: float = 30.0  # no reconnect delay ceiling exceeds this
    stable_after: float = 5.0  # a connection must last this long to reset the backoff
    connect_timeout: float = 10.0  # an opening socket may take this long
    stall: float = 30.0  # an open socket without any message this long mid-interview: stalled
    leave_timeout: float = 10.0  # close-channel -> 4002 on one socket


def backoff_delay(attempt: int, base: float, cap: float, rng: random.Random) -> float:
    """chat_ws.js backoffDelay: exponential from base, capped, with full jitter."""
    ceiling = min(cap, base * 2 ** max(0, attempt - 1))
    return rng.random() * ceiling


class Backoff:
    """chat_ws.js's reconnect schedule: one quick attempt after a drop, then capped growth."""

    def __init__(self, policy: Policy, rng: random.Random) -> None:
        self.policy = policy
        self.rng = rng
        self.attempt = 0
        self.opened_at: float | None = None
        self.opened_by_quick = False
        self.quick = False

    def opened(self, now: float) -> None:
        self.opened_at = now
        self.opened_by_quick = self.quick
        self.quick = False

    def closed(self, now: float) -> float:
        """A socket closed, or an attempt failed: the delay before the next attempt."""
        p = self.policy
        was_open = self.opened_at is not None
        stable = was_open and now - (self.opened_at or now) >= p.stable_after
        self.opened_at = None
        if stable:
            self.attempt = 0
        quick = was_open and (stable or not self.opened_by_quick)
        self.opened_by_quick = False
        self.attempt += 1
        cap = min(p.reconnect_cap, p.first_retry_cap) if quick else p.reconnect_cap
        self.quick = quick
        return backoff_delay(self.attempt, p.reconnect_base, cap, self.rng)


class Hub:
    """What the clients share with the orchestrator: the servers, the open sockets, the phases."""

    def __init__(
        self, urls: list[str], prefix: str, questions: dict[str, str], policy: Policy, seed: int
    ) -> None:
        self.urls = urls  # websocket endpoints, one per server
        self.prefix = prefix  # every client-id starts with it
        self.questions = questions  # question text -> question id
        self.policy = policy
        self.rng = random.Random(seed)
        self.records: list[InterviewRecord] = []
        self.open: set[InterviewClient] = set()  # clients with an open socket (cut candidates)
        self.stop_new = asyncio.Event()  # the settle began: finish the current interview, then stop
        self.settle_deadline: float | None = None  # unix seconds: interviews still running end then
        self.leave_deadline: float | None = None  # unix seconds: clients stop trying to leave

    def qid(self, text: Any) -> str:
        return self.questions.get(str(text), "?" + str(text)[:40])

    def pick(self, avoid: str | None) -> str:
        """A random server, other than ``avoid`` when there is another."""
        others = [u for u in self.urls if u != avoid] or self.urls
        return self.rng.choice(others)


class InterviewClient:
    """One client-id: its interview, its reconnects and its leaving."""

    def __init__(self, hub: Hub, client_id: str, rng: random.Random) -> None:
        self.hub = hub
        self.client_id = client_id
        self.rng = rng
        self.record = InterviewRecord(client_id=client_id, started=time.time())
        self.backoff = Backoff(hub.policy, rng)
        self.phase = "interview"  # then "leave", then "done"
        self.ws: ClientConnection | None = None
        self.server: str | None = None
        self.started = False  # start-conversation written
        self.ever_opened = False
        self.delay = 0.0  # seconds to wait before the next attempt
        self.queued: list[tuple[str, str]] = []  # answers (qid, p-key) not written: the socket was gone
        self.unserved: list[Drop] = []  # drops not yet followed by service
        self.asked_keys: set[str] = set()
        self.cleared_keys: set[str] = set()
        self.unconfirmed: list[tuple[str, str]] = []  # answers (qid, p-key) written to this socket
        self.retries: dict[str, int] = {}  # p-key -> answers sent again after a refusal
        self._retrying: set[asyncio.Task[None]] = set()
        self._cut = False
        self._leave_sent_at = 0.0
        self._leave_ws: ClientConnection | None = None  # the socket close-channel was written to

    # ------------------------------------------------------------------ the whole interview
    async def run(self) -> InterviewRecord:
        self.hub.records.append(self.record)
        try:
            while self.phase != "done":
                if not await self._open():
                    break
                await self._serve()
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # a bug of the tool: recorded, the lane goes on
            logger.exception("chaos client %s failed", self.client_id)
            self.record.end, self.record.end_detail = "failed", f"{type(exc).__name__}: {exc}"
        finally:
            self.hub.open.discard(self)
            for task in self._retrying:
                task.cancel()
            if self.ws is not None:
                self.ws.transport.abort()
        return self.record

    def cut(self) -> None:
        """Drop the socket without a close frame (the tool's fault)."""
        if self.ws is not None:
            self._cut = True
            self.ws.transport.abort()

    # ------------------------------------------------------------------ connecting
    def _deadline(self) -> float | None:
        return self.hub.leave_deadline

    async def _open(self) -> bool:
        """Open a socket, waiting the backoff first; False once leaving is no longer possible."""
        rec = self.record
        while True:
            deadline = self._deadline()
            if self.delay > 0:
                wait = self.delay if deadline is None else min(self.delay, max(0.0, deadline - time.time()))
                await asyncio.sleep(wait)  # the backoff schedule
                self.delay = 0.0
            self._check_settle()
            if self.phase == "leave" and not self.ever_opened:
                rec.left = True  # the server never heard of this client-id
                self.phase = "done"
                return False
            if deadline is not None and time.time() >= deadline:
                rec.end_detail = (rec.end_detail + "; " if rec.end_detail else "") + "gave up leaving"
                return False
            url = self.hub.pick(self.server)
            self.server = url
            try:
                self.ws = await websockets.connect(
                    f"{url}?client-id={self.client_id}",
                    origin=url.replace("ws://", "http://").rsplit("/", 1)[0],  # type: ignore[arg-type]
                    subprotocols=[JSON_SUBPROTOCOL],  # type: ignore[list-item]
                    compression=None,
                    ping_interval=None,
                    open_timeout=self.hub.policy.connect_timeout,
                    close_timeout=2,
                    max_size=MAX_FRAME,
                )
            except (OSError, asyncio.TimeoutError, websockets.WebSocketException):
                rec.connect_failures += 1
                self.delay = self.backoff.closed(time.monotonic())
                continue
            now = time.time()
            self.backoff.opened(time.monotonic())
            for drop in self.unserved:
                if drop.reopened is None:
                    drop.reopened = now
                    rec.reconnects += 1
            self.unserved = [d for d in self.unserved if d.mid_interview and self.phase == "interview"]
            reopened = self.ever_opened
            self.ever_opened = True
            self.unconfirmed = []  # replies to answers on the old socket went down with it
            self.hub.open.add(self)
            if self.phase == "interview":
                if not self.started:
                    self.started = await self._send({"dispatch-key": "start-conversation"})
                elif reopened:
                    await self._send({"dispatch-key": "resume-conversation"})
                queued, self.queued = self.queued, []
                for qid, p_key in queued:
                    await self._answer(qid, p_key)
            elif self.phase == "leave":
                await self._leave_now()
            return True

    def _check_settle(self) -> None:
        """Past the settle's end an interview still running ends unfinished and leaves."""
        deadline = self.hub.settle_deadline
        if self.phase == "interview" and deadline is not None and time.time() >= deadline:
            self._end("unfinished", "still running when the settle ended")

    # ------------------------------------------------------------------ one socket
    async def _serve(self) -> None:
        """Read one socket until it closes (then schedule the reconnect) or the client is done."""
        assert self.ws is not None
        ws = self.ws
        policy = self.hub.policy
        quiet_since = time.time()
        while True:
            self._check_settle()
            if self.phase == "leave" and self._leave_ws is not ws:
                await self._leave_now()
            now = time.time()
            if self.phase == "interview":
                limit = quiet_since + policy.stall
                if self.hub.settle_deadline is not None:
                    limit = min(limit, self.hub.settle_deadline)
            else:
                limit = self._leave_sent_at + policy.leave_timeout
            try:
                text = await asyncio.wait_for(ws.recv(), max(0.0, limit - now))
            except asyncio.TimeoutError:
                if self.phase == "interview":
                    if time.time() >= quiet_since + policy.stall:
                        self._end("stalled", f"no message for {policy.stall:g}s on {self._where()}")
                else:  # no 4002: try leaving through another socket
                    self._closed(NO_CLOSE_FRAME, dropped_by_tool=True)
                    ws.transport.abort()
                    return
                continue
            except websockets.ConnectionClosed as exc:
                self._closed(exc.rcvd.code if exc.rcvd is not None else NO_CLOSE_FRAME)
                return
            quiet_since = time.time()
            if isinstance(text, str):
                await self._route(text)
            if self.phase == "done":
                return

    def _where(self) -> str:
        return (self.server or "?").split("//", 1)[-1].rsplit("/", 1)[0]

    def _closed(self, code: int, *, dropped_by_tool: bool = False) -> None:
        """The socket closed: leave, end or reconnect, as the code says."""
        rec = self.record
        self.hub.open.discard(self)
        self.ws = None
        cut, self._cut = self._cut, False
        now = time.time()
        if code == LEAVE_CODE:
            if self.phase == "interview":
                rec.told.append(Told(now, f"close:{code}", "forgotten by the server mid-interview"))
                self._end("told", f"closed with {code}")
            rec.left = True
            self.phase = "done"
            return
        if code in (WS_4001_REPLACED, WS_4003_CLIENT_ID_BOUND):
            rec.told.append(Told(now, f"close:{code}", self._where()))
            if self.phase == "interview":
                self._end("told", f"closed with {code}")
        elif not dropped_by_tool:
            drop = Drop(
                t=now, code=code, cause="cut" if cut else "server", server=self._where(),
                mid_interview=self.phase == "interview" and self.started,
            )  # fmt: skip
            rec.drops.append(drop)
            self.unserved.append(drop)
        self.delay = self.backoff.closed(time.monotonic())

    # ------------------------------------------------------------------ messages
    async def _send(self, message: dict[str, Any]) -> bool:
        """Write one message; False when the socket is gone (the reader sees the close)."""
        if self.ws is None:
            return False
        try:
            await self.ws.send(json.dumps(message))
            return True
        except websockets.ConnectionClosed:
            return False

    async def _answer(self, qid: str, p_key: str) -> None:
        text = f"{self.client_id}/{qid}"
        message = {"dispatch-key": "domain-expert-says", "promise-keys": [p_key], "msg-text": text}
        if await self._send(message):
            self.record.sent.append(Sent(time.time(), qid, p_key, text))
            self.unconfirmed.append((qid, p_key))
        else:
            self.queued.append((qid, p_key))  # the browser queues what it could not write

    async def _answer_again(self, qid: str, p_key: str) -> None:
        await asyncio.sleep(RETRY_AFTER)  # the person reads the note and sends the answer again
        if self.phase == "interview" and p_key not in self.cleared_keys:
            await self._answer(qid, p_key)

    def _served(self, now: float) -> None:
        for drop in self.unserved:
            if drop.reopened is not None and drop.served is None:
                drop.served = now
        self.unserved = []

    def _end(self, how: str, detail: str) -> None:
        """The interview is over (finished, told, stalled, unfinished): leave next."""
        if self.phase != "interview":
            return
        self.record.end, self.record.end_detail = how, detail
        self.phase = "leave"
        self.queued = []

    async def _leave_now(self) -> None:
        self._leave_sent_at = time.time()
        self._leave_ws = self.ws
        await self._send({"dispatch-key": "close-channel"})

    async def _route(self, text: str) -> None:
        try:
            message = json.loads(text)
        except ValueError:
            self.record.told.append(Told(time.time(), "error:unreadable-frame", text[:80]))
            return
        if not isinstance(message, dict):
            return
        rec = self.record
        now = time.time()
        key = message.get("dispatch-key")
        if key == "iviewr-says" and message.get("p-key"):
            p_key = str(message["p-key"])
            qid = self.hub.qid(message.get("text"))
            rec.asked.append(Asked(now, qid, p_key))
            self.asked_keys.add(p_key)
            self._served(now)
            if self.phase == "interview":
                await self._answer(qid, p_key)
        elif key == "clear-promise-keys":
            reason = message.get("reason")
            keys = [str(k) for k in message.get("promise-keys") or ()]
            rec.cleared.extend(Cleared(now, k, str(reason) if reason else None) for k in keys)
            self.cleared_keys.update(keys)
            if not reason:
                self.unconfirmed = [u for u in self.unconfirmed if u[1] not in keys]
            if reason and self.asked_keys.intersection(keys):
                rec.told.append(Told(now, f"withdrawn:{reason}", str(message.get("description", ""))))
                self._end("told", f"question withdrawn ({reason})")
        elif key == "error":
            detail = f"in reply to {message.get('in-reply-to', '?')}: {message.get('description', '')}"
            rec.told.append(Told(now, f"error:{message.get('error')}", detail))
            if message.get("in-reply-to") == "domain-expert-says" and self.unconfirmed:
                # Answers are handled in order: the refusal is the oldest unconfirmed answer's.
                # The page puts it back in the answer box and the person sends it again, unless
                # the server has no such question.
                qid, p_key = self.unconfirmed.pop(0)
                if message.get("error") != "no-matching-question" and self.retries.get(p_key, 0) < MAX_RETRIES:
                    self.retries[p_key] = self.retries.get(p_key, 0) + 1
                    task = asyncio.create_task(self._answer_again(qid, p_key))
                    self._retrying.add(task)
                    task.add_done_callback(self._retrying.discard)
        elif key == "load-table":
            if self.phase == "interview":
                rec.finished = now
                self._served(now)
                self._end("finished", "")
        elif key == "alive?":
            await self._send({"dispatch-key": "alive-confirm"})


async def lane(hub: Hub, n: int, ramp: float) -> None:
    """Interviews one after another under fresh client-ids until the settle begins."""
    rng = random.Random(hub.rng.random())
    await asyncio.sleep(rng.uniform(0, ramp))  # spread the first connects
    k = 0
    while not hub.stop_new.is_set():
        k += 1
        await InterviewClient(hub, f"{hub.prefix}{n}-{k}", rng).run()
