"""A websocket test client speaking the original client's EDN (or JSON) over real TCP."""

from __future__ import annotations

import asyncio
import uuid
from typing import Any

import websockets

from chat_ws.codec import EDN, JSON, JSON_SUBPROTOCOL

RECV_TIMEOUT = 5.0  # seconds to wait for an expected message


class WsClient:
    """One browser app instance, as the original ClojureScript client behaves on the wire."""

    def __init__(self, url: str, client_id: str | None = None, *, json: bool = False, origin: str | None = None):
        self.client_id = client_id or str(uuid.uuid4())
        self.url = url
        self.codec = JSON if json else EDN
        self.subprotocols = [JSON_SUBPROTOCOL] if json else None
        self.origin = origin or url.replace("ws://", "http://").rsplit("/ws", 1)[0]
        self.ws: Any = None
        self.p_keys: set[str] = set()

    async def connect(self) -> WsClient:
        self.ws = await websockets.connect(
            f"{self.url}?client-id={self.client_id}",
            origin=self.origin,
            subprotocols=self.subprotocols,
            open_timeout=RECV_TIMEOUT,
        )
        return self

    async def __aenter__(self) -> WsClient:
        return await self.connect()

    async def __aexit__(self, *exc: Any) -> None:
        await self.close()

    async def close(self) -> None:
        if self.ws is not None:
            await self.ws.close()

    async def send_raw(self, text: str | bytes) -> None:
        await self.ws.send(text)

    async def send(self, message: dict[str, Any]) -> None:
        await self.ws.send(self.codec.encode({**message, "client-id": self.client_id}))

    async def recv(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        text = await asyncio.wait_for(self.ws.recv(), timeout)
        message = self.codec.decode(text, max_nesting=64)
        if message.get("p-key"):
            self.p_keys.add(str(message["p-key"]))
        if message.get("dispatch-key") == "clear-promise-keys":
            self.p_keys.difference_update(str(k) for k in message.get("promise-keys", []))
        return message

    async def recv_until(self, dispatch_key: str, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """Read messages until one with dispatch_key arrives (others are dropped)."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - loop.time()))
            if message.get("dispatch-key") == dispatch_key:
                return message

    async def next_question(self, timeout: float = RECV_TIMEOUT) -> dict[str, Any]:
        """Read messages until a question (a message carrying a p-key) arrives."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            message = await self.recv(max(0.01, deadline - loop.time()))
            if message.get("p-key"):
                return message

    async def answer(self, text: str, table: Any = None) -> None:
        message: dict[str, Any] = {
            "dispatch-key": "domain-expert-says",
            "msg-text": text,
            "promise-keys": frozenset(self.p_keys),
        }
        if table is not None:
            message["table"] = table
        await self.send(message)

    async def closed(self, timeout: float = RECV_TIMEOUT) -> int | None:
        """Wait until the server closes the socket; return its close code."""
        try:
            while True:
                await asyncio.wait_for(self.ws.recv(), timeout)
        except websockets.ConnectionClosed as exc:
            return exc.rcvd.code if exc.rcvd else None
