"""Type aliases and records of chat_ws's public surface."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

Message = dict[str, Any]
"""Internal representation of one wire message (see chat_ws.codec)."""

OnDisconnect = Literal["hold", "fail"]
Outcome = Literal["answered", "gone", "cancelled", "timeout", "lost", "superseded"]


JOURNAL_SEPARATOR = "\x1f"  # between conversation and step in a journal field; in neither name


def journal_field(conversation: str, step: str) -> str:
    """The journal field of one step of a conversation."""
    return f"{conversation}{JOURNAL_SEPARATOR}{step}"


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
    step: str | None = None  # its name within the conversation: its answer is journaled
    asker: int = 0  # which ask() of process server_id waits on it (a takeover names a new one)

    def held_by(self, other: Question) -> bool:
        """True when other's asker (process and ask()) is the one this record names."""
        return self.server_id == other.server_id and self.asker == other.asker

    @property
    def journal_field(self) -> str | None:
        """Where the journal keeps this question's answer (None: not journaled)."""
        return journal_field(self.conversation, self.step) if self.step is not None else None

    def text(self) -> str:
        """The question's text, for the admin and logs at debug level."""
        value = self.message.get("text")
        return value if isinstance(value, str) else ""


@dataclass
class JournalEntry:
    """A journaled answer: the step question as it was asked, the answer and when it came."""

    question: Question
    answer: Message
    answered_at: float
