"""Type aliases and records of chat_ws's public surface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Message = dict[str, Any]
"""Internal representation of one wire message (see chat_ws.codec)."""

OnDisconnect = Literal["hold", "fail"]
Outcome = Literal["answered", "gone", "cancelled", "timeout", "lost"]


@dataclass(frozen=True)
class Answer:
    """What the person answered to one question."""

    text: str | None
    table: Any
    message: Message
    p_key: str
    client_id: str
    conversation: str


@dataclass
class Question:
    """A pending question as the store keeps it."""

    p_key: str
    client_id: str
    conversation: str
    message: Message
    asked_at: float  # unix seconds
    expires_at: float  # unix seconds
    on_disconnect: OnDisconnect = "hold"
    server_id: str = ""  # process of the asker, woken when the answer arrives elsewhere
    seq: int = 0  # order of asking within the store; most recent is highest
    extra: dict[str, Any] = field(default_factory=dict)

    def text(self) -> str:
        """The question's text, for the admin and logs at debug level."""
        value = self.message.get("text")
        return value if isinstance(value, str) else ""
