"""In-process websocket clients for consumer-level tests, on chat_ws.testing's communicator."""

from __future__ import annotations

from typing import Any

from channels.routing import URLRouter

from chat_ws.routing import websocket_urlpatterns
from chat_ws.testing import ChatCommunicator

TIMEOUT = 5.0  # seconds to wait for an expected frame


def application() -> Any:
    return URLRouter(websocket_urlpatterns)


class Comm:
    """One client speaking EDN (or JSON) to a ChatConsumer in this process (chat_ws.testing)."""

    def __init__(self, client_id: str | None = None, *, json: bool = False, scope: dict[str, Any] | None = None) -> None:
        self.comm = ChatCommunicator(client_id, codec="json" if json else "edn")
        self.client_id = self.comm.client_id
        self.codec = self.comm.codec
        self.comm.scope.update(scope or {})

    @property
    def p_keys(self) -> set[str]:
        return self.comm.p_keys

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
        await self.comm.send_message(message)

    async def send_raw(self, text: str | None = None, data: bytes | None = None) -> None:
        await self.comm.send_to(text_data=text, bytes_data=data)

    async def recv(self, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await self.comm.receive_message(timeout)

    async def recv_until(self, key: str, timeout: float = TIMEOUT) -> dict[str, Any]:
        return await self.comm.receive_until(key, timeout)

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
        return await self.comm.close_code(timeout)

    async def nothing(self, timeout: float = 0.1) -> bool:
        return await self.comm.receive_nothing(timeout)

    async def disconnect(self, code: int = 1001) -> None:
        await self.comm.disconnect(code=code, timeout=TIMEOUT)
