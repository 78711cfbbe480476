"""In-process websocket clients for consumer-level tests (channels' WebsocketCommunicator)."""

from __future__ import annotations

import uuid
from typing import Any

from channels.routing import URLRouter
from channels.testing import WebsocketCommunicator

from chat_ws.codec import EDN, JSON, JSON_SUBPROTOCOL
from chat_ws.routing import websocket_urlpatterns

TIMEOUT = 5.0  # seconds to wait for an expected frame


def application() -> Any:
    return URLRouter(websocket_urlpatterns)


class Comm:
    """One client speaking EDN (or JSON) to a ChatConsumer in this process."""

    def __init__(self, client_id: str | None = None, *, json: bool = False, scope: dict[str, Any] | None = None) -> None:
        self.client_id = client_id or str(uuid.uuid4())
        self.codec = JSON if json else EDN
        self.comm = WebsocketCommunicator(
            application(),
            f"/ws?client-id={self.client_id}",
            subprotocols=[JSON_SUBPROTOCOL] if json else None,
        )
        self.comm.scope.update(scope or {})
        self.p_keys: set[str] = set()

    async def try_connect(self) -> tuple[bool, int | None]:
        """Connect; return whether the server accepted and, when it closed at once, the code."""
        connected, code = await self.comm.connect(timeout=TIMEOUT)
        if connected:
            event = await self.comm.receive_output(TIMEOUT) if not await self.comm.receive_nothing(0.05) else None
            if event is not None and event["type"] == "websocket.close":
                return False, event.get("code")
        return connected, code

    async def connect(self) -> Comm:
        connected, _ = await self.comm.connect(timeout=TIMEOUT)
        assert connected, "the consumer refused the connection"
        return self

    async def send(self, message: dict[str, Any]) -> None:
        await self.comm.send_to(text_data=self.codec.encode(message))

    async def send_raw(self, text: str | None = None, data: bytes | None = None) -> None:
        await self.comm.send_to(text_data=text, bytes_data=data)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        event = await self.comm.receive_output(timeout)
        if event["type"] == "websocket.close":
            raise ConnectionError(f"closed with {event.get('code')}")
        message = self.codec.decode(event["text"], max_nesting=64)
        if message.get("p-key"):
            self.p_keys.add(str(message["p-key"]))
        if message.get("dispatch-key") == "clear-promise-keys":
            self.p_keys.difference_update(str(k) for k in message["promise-keys"])
        return message

    async def recv_until(self, key: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        while True:
            message = await self.recv(timeout)
            if message["dispatch-key"] == key:
                return message

    async def answer(self, text: str, keys: set[str] | None = None, **extra: Any) -> None:
        await self.send(
            {
                "dispatch-key": "domain-expert-says",
                "msg-text": text,
                "promise-keys": frozenset(self.p_keys if keys is None else keys),
                **extra,
            }
        )

    async def close_code(self, timeout: float = TIMEOUT) -> int | None:
        """Wait for the server to close this socket; return the close code."""
        while True:
            event = await self.comm.receive_output(timeout)
            if event["type"] == "websocket.close":
                return event.get("code")

    async def nothing(self, timeout: float = 0.1) -> bool:
        return await self.comm.receive_nothing(timeout)

    async def disconnect(self, code: int = 1001) -> None:
        await self.comm.disconnect(code=code, timeout=TIMEOUT)
