"""A simulated browser app instance: one real websocket speaking the original client's protocol."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable
from typing import Any

import websockets
from websockets.asyncio.client import ClientConnection

from chat_ws.codec import EDN, JSON, JSON_SUBPROTOCOL, Codec, Keyword
from chat_ws.exceptions import MalformedMessage
from loadtest.config import StressConfig

WS_4002_FORGOTTEN = 4002  # the server forgot the client (close-channel, sweep)
MAX_FRAME = 1 << 20  # bytes per frame the client accepts


class ClientError(Exception):
    """Something the simulated client saw that a correct server never does."""

    def __init__(self, kind: str, detail: str = "") -> None:
        super().__init__(f"{kind}: {detail}" if detail else kind)
        self.kind = kind
        self.detail = detail


def now_ms() -> float:
    return time.perf_counter() * 1000.0


class SimClient:
    """Connects, pings, answers questions and leaves as the original ClojureScript client does.

    A reader task decodes every frame and routes it: ``ping-confirm`` to the waiting ping,
    questions to a queue, ``loadtest-done`` to a future, ``error`` replies to ``on_error``.
    """

    def __init__(
        self, config: StressConfig, client_id: str, on_error: Callable[[str, str], None] | None = None
    ) -> None:
        self.config = config
        self.client_id = client_id
        self.codec: Codec = JSON if config.codec == "json" else EDN
        self.on_error = on_error
        self.ws: ClientConnection | None = None
        self.questions: asyncio.Queue[tuple[str, float] | None] = asyncio.Queue()
        self.p_keys: set[str] = set()
        self.cleared = 0  # clear-promise-keys messages received
        self.done: asyncio.Future[dict[str, Any]] | None = None
        self._pings: dict[int, asyncio.Future[float]] = {}
        self._next_ping = 0
        self._reader: asyncio.Task[None] | None = None
        self.closed: asyncio.Future[int] | None = None
        self.closed_wall: float | None = None  # unix time the socket closed
        self.close_detail = ""  # why the socket closed without a close frame

    # ------------------------------------------------------------------ lifecycle
    async def connect(self) -> float:
        """Open the socket; return the handshake time in ms (ClientError on failure)."""
        cfg = self.config
        began = now_ms()
        try:
            self.ws = await websockets.connect(
                f"{cfg.url}?client-id={self.client_id}",
                origin=cfg.origin_header(),  # type: ignore[arg-type]
                subprotocols=[JSON_SUBPROTOCOL] if cfg.codec == "json" else None,  # type: ignore[list-item]
                compression=None,
                ping_interval=None,
                open_timeout=cfg.timeout,
                close_timeout=cfg.timeout,
                max_size=MAX_FRAME,
            )
        except websockets.InvalidStatus as exc:
            raise ClientError("connect refused", f"HTTP {exc.response.status_code}") from exc
        except (OSError, asyncio.TimeoutError, websockets.WebSocketException) as exc:
            raise ClientError("connect failed", type(exc).__name__) from exc
        loop = asyncio.get_running_loop()
        self.closed = loop.create_future()
        self._reader = loop.create_task(self._read())
        return now_ms() - began

    async def _read(self) -> None:
        assert self.ws is not None and self.closed is not None
        code = 1006  # abnormal closure: no close frame from the server
        try:
            while True:
                text = await self.ws.recv()
                if isinstance(text, bytes):
                    self._error("binary frame from the server")
                    continue
                self._route(text)
        except websockets.ConnectionClosed as exc:
            if exc.rcvd is not None:
                code = exc.rcvd.code
            else:
                cause = exc.__cause__ or exc.__context__
                self.close_detail = f"{exc}" + (f" ({type(cause).__name__}: {cause})" if cause else "")
        finally:
            self.closed_wall = time.time()
            if not self.closed.done():
                self.closed.set_result(code)
            gone = ClientError("socket closed", f"code {code}")
            for future in self._pings.values():
                if not future.done():
                    future.set_exception(gone)
            if self.done is not None and not self.done.done():
                self.done.set_exception(gone)
            self.questions.put_nowait(None)

    def _route(self, text: str) -> None:
        try:
            message = self.codec.decode(text, max_nesting=64)
        except MalformedMessage as exc:
            self._error("unreadable frame", exc.reason)
            return
        key = message.get("dispatch-key")
        if key == "ping-confirm":
            future = self._pings.pop(message.get("ping-id"), None)  # type: ignore[arg-type]
            if future is None:
                self._error("unexpected ping-confirm", str(message.get("ping-id")))
            elif not future.done():
                future.set_result(now_ms())
        elif message.get("p-key"):
            p_key = str(message["p-key"])
            self.p_keys.add(p_key)
            self.questions.put_nowait((p_key, now_ms()))
        elif key == "clear-promise-keys":
            self.cleared += 1
            self.p_keys.difference_update(str(k) for k in message.get("promise-keys") or ())
        elif key == "loadtest-done":
            if self.done is not None and not self.done.done():
                self.done.set_result(message)
        elif key == "error":
            self._error(f"server error :{message.get('error')}", str(message.get("description", "")))

    def _error(self, kind: str, detail: str = "") -> None:
        if self.on_error is not None:
            self.on_error(kind, detail)

    async def send(self, message: dict[str, Any]) -> None:
        assert self.ws is not None
        message = {**message, "client-id": self.client_id}
        try:
            await self.ws.send(self.codec.encode(message))
        except websockets.ConnectionClosed as exc:
            raise ClientError("socket closed", f"code {exc.rcvd.code if exc.rcvd else 1006}") from exc

    async def _wait(self, awaitable: Any, what: str) -> Any:
        try:
            return await asyncio.wait_for(awaitable, self.config.timeout)
        except asyncio.TimeoutError:
            raise ClientError("timeout", f"{what} after {self.config.timeout:g}s") from None

    # ------------------------------------------------------------------ protocol
    async def send_ping(self) -> tuple[int, asyncio.Future[float]]:
        """Send one ping; return its id and the future its ping-confirm resolves."""
        self._next_ping += 1
        ping_id = self._next_ping
        future: asyncio.Future[float] = asyncio.get_running_loop().create_future()
        self._pings[ping_id] = future
        await self.send({"dispatch-key": Keyword("ping"), "ping-id": ping_id})
        return ping_id, future

    async def ping(self) -> float:
        """Ping and wait for the confirmation; return the round trip in ms."""
        began = now_ms()
        _, future = await self.send_ping()
        return await self._wait(future, "ping-confirm") - began

    async def confirmed(self, future: asyncio.Future[float]) -> float:
        return await self._wait(future, "ping-confirm")

    async def start_loadtest(self, questions: int) -> None:
        loop = asyncio.get_running_loop()
        if self.done is None or self.done.done():
            self.done = loop.create_future()
        await self.send(
            {
                "dispatch-key": Keyword("start-conversation"),
                "conversation-id": Keyword("loadtest"),
                "questions": questions,
            }
        )

    async def next_question(self) -> tuple[str, float]:
        """The next question's p-key and its arrival time (ms)."""
        item = await self._wait(self.questions.get(), "question")
        if item is None:
            code = self.closed.result() if self.closed is not None and self.closed.done() else None
            raise ClientError("socket closed", f"code {code} while waiting for a question ({self.client_id})")
        return item

    async def answer(self, text: str = "ok") -> None:
        """Answer with every p-key asked and not cleared, as the original client does."""
        await self.send(
            {
                "dispatch-key": Keyword("domain-expert-says"),
                "msg-text": text,
                "promise-keys": frozenset(Keyword(k) for k in self.p_keys),
            }
        )

    async def finished(self) -> dict[str, Any]:
        """The loadtest-done report of the running load-test conversation."""
        assert self.done is not None
        return await self._wait(self.done, "loadtest-done")

    async def wait_closed(self) -> int:
        """Wait until the server closes the socket; return the close code."""
        assert self.closed is not None
        code = await self._wait(asyncio.shield(self.closed), "close")
        if self._reader is not None:
            await self._reader
        return code

    async def leave(self) -> float:
        """Send close-channel and wait for the server's 4002; return the time it took in ms."""
        began = now_ms()
        await self.send({"dispatch-key": Keyword("close-channel")})
        code = await self.wait_closed()
        if code != WS_4002_FORGOTTEN:
            raise ClientError(
                "unexpected close code", f"{code} after close-channel ({self.client_id}) {self.close_detail}".rstrip()
            )
        return now_ms() - began

    async def abort(self) -> None:
        """Drop the socket without the protocol's goodbye (cleanup after a failure)."""
        if self.ws is not None:
            try:
                await asyncio.wait_for(self.ws.close(), 5)
            except Exception:
                self.ws.transport.abort()
        if self._reader is not None:
            self._reader.cancel()
            try:
                await self._reader
            except (asyncio.CancelledError, Exception):
                pass
