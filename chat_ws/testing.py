"""Test helpers for sites that use chat_ws: a communicator that speaks the protocol, and reset().

``ChatCommunicator`` is channels' ``WebsocketCommunicator`` on chat_ws's consumer; it encodes
and decodes messages with the connection's codec and keeps the p-keys it was asked, as the
browser does, so a test can answer. ``reset()`` clears this process's chat_ws state between
tests (local sockets, askers, reconnect timers, the store).
"""

from __future__ import annotations

import uuid
from typing import Any

from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from chat_ws.runtime import reset_runtime
from chat_ws.codec import EDN, JSON, JSON_SUBPROTOCOL, Codec
from chat_ws.store import reset_store
from chat_ws.types import Message

__all__ = ["ChatCommunicator", "reset"]

TIMEOUT = 5.0  # seconds a receive waits by default


class ChatCommunicator(WebsocketCommunicator):
    """A websocket client of chat_ws's consumer, in this process, speaking EDN or JSON."""

    def __init__(
        self,
        client_id: str | None = None,
        *,
        codec: str = "edn",
        application: Any = None,
        path: str = "/ws",
        headers: list[tuple[bytes, bytes]] | None = None,
    ) -> None:
        if application is None:
            from chat_ws.routing import websocket_urlpatterns

            application = URLRouter(websocket_urlpatterns)
        self.client_id = client_id or str(uuid.uuid4())
        self.codec: Codec = JSON if codec == "json" else EDN
        super().__init__(
            application,
            f"{path}?client-id={self.client_id}",
            headers=headers,
            subprotocols=[JSON_SUBPROTOCOL] if codec == "json" else None,
        )
        self.p_keys: set[str] = set()

    async def send_message(self, message: Message) -> None:
        """Encode and send one message (``dispatch-key`` and its fields)."""
        await self.send_to(text_data=self.codec.encode(message))

    async def receive_message(self, timeout: float = TIMEOUT) -> Message:
        """The next message from the server; ConnectionError when the server closed instead."""
        event = await self.receive_output(timeout)
        if event["type"] == "websocket.close":
            raise ConnectionError(f"closed with {event.get('code')}")
        message = self.codec.decode(event["text"], max_nesting=64)
        if message.get("p-key"):
            self.p_keys.add(str(message["p-key"]))
        if message.get("dispatch-key") == "clear-promise-keys":
            self.p_keys.difference_update(str(k) for k in message.get("promise-keys") or ())
        return message

    async def receive_until(self, dispatch_key: str, timeout: float = TIMEOUT) -> Message:
        """Skip messages until one with ``dispatch_key`` arrives; return it."""
        while True:
            message = await self.receive_message(timeout)
            if message.get("dispatch-key") == dispatch_key:
                return message

    async def answer(self, text: str, *, table: Any = None, p_keys: set[str] | None = None) -> None:
        """Answer as the browser does: ``domain-expert-says`` with every p-key it holds."""
        message: Message = {
            "dispatch-key": "domain-expert-says",
            "msg-text": text,
            "promise-keys": frozenset(self.p_keys if p_keys is None else p_keys),
        }
        if table is not None:
            message["table"] = table
        await self.send_message(message)

    async def close_code(self, timeout: float = TIMEOUT) -> int | None:
        """Wait for the server to close the socket, skipping messages; return the close code."""
        while True:
            event = await self.receive_output(timeout)
            if event["type"] == "websocket.close":
                return event.get("code")


def reset() -> None:
    """Forget this process's chat_ws state: local sockets, waiting askers, reconnect timers,
    handler tasks and the store (the next use builds it again from the settings)."""
    reset_runtime()
    reset_store()
