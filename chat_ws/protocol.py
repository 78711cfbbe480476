"""Dispatch-key names, message validation and the error replies of the wire protocol."""

from __future__ import annotations

import re
from datetime import datetime, timezone
from typing import Any

from chat_ws.codec import Keyword
from chat_ws.exceptions import InvalidMessage, MalformedMessage
from chat_ws.types import Message

# Client -> server
PING = "ping"
ALIVE_CONFIRM = "alive-confirm"
DOMAIN_EXPERT_SAYS = "domain-expert-says"
CLOSE_CHANNEL = "close-channel"

# Server -> client
PING_CONFIRM = "ping-confirm"
ALIVE_CHECK = "alive?"
CLEAR_PROMISE_KEYS = "clear-promise-keys"
ERROR = "error"

# Error codes carried in an error reply's :error field
E_MALFORMED = "malformed-message"
E_UNKNOWN_KEY = "unknown-dispatch-key"
E_BINARY = "binary-frame"
E_HANDLER_FAILED = "handler-failed"
E_NO_MATCHING_QUESTION = "no-matching-question"
E_BAD_FIELD = "bad-field"
E_RATE_LIMITED = "rate-limited"
E_UNAVAILABLE = "store-unavailable"

_DISPATCH_KEY_RE = re.compile(r"[A-Za-z][A-Za-z0-9_.?!*+<>=-]{0,63}\Z")
CLIENT_ID_RE = re.compile(r"[A-Za-z0-9_.:-]{1,128}\Z")


def valid_client_id(client_id: str | None) -> bool:
    """True for a non-empty id of at most 128 safe characters."""
    return bool(client_id) and CLIENT_ID_RE.match(client_id) is not None  # type: ignore[arg-type]


def dispatch_key(message: Message) -> str:
    """Return the message's dispatch-key; raise MalformedMessage when absent or invalid."""
    key = message.get("dispatch-key")
    if not isinstance(key, str) or not key:
        raise MalformedMessage("missing-dispatch-key", "a message needs a dispatch-key")
    if not _DISPATCH_KEY_RE.match(key):
        raise MalformedMessage("bad-dispatch-key", "dispatch-key has invalid characters")
    return key


def now() -> datetime:
    """The current time, timezone-aware UTC."""
    return datetime.now(timezone.utc)


def validate(message: Message) -> str:
    """Check that a server message is a map with a valid dispatch-key; return the key."""
    if not isinstance(message, dict):
        raise InvalidMessage(f"a message must be a map, not {type(message).__name__}")
    key = message.get("dispatch-key")
    if not isinstance(key, str) or not _DISPATCH_KEY_RE.match(key):
        raise InvalidMessage(f"invalid dispatch-key {key!r}")
    return key


def outgoing(message: Message) -> Message:
    """Validate a server message and return a copy stamped with :timestamp."""
    key = validate(message)
    stamped = dict(message)
    stamped["dispatch-key"] = Keyword(key)
    stamped["timestamp"] = now()
    return stamped


def error_reply(code: str, description: str, **extra: Any) -> Message:
    """An error message for the client: {:dispatch-key :error :error code :description text}."""
    reply: Message = {"dispatch-key": ERROR, "error": Keyword(code), "description": description}
    reply.update(extra)
    return reply


def malformed_reply(exc: MalformedMessage, in_reply_to: str | None = None) -> Message:
    """The error reply to a message that could not be read or has a field of the wrong type."""
    extra: dict[str, Any] = {"reason": Keyword(exc.reason)}
    if in_reply_to:
        extra["in-reply-to"] = in_reply_to
    return error_reply(E_MALFORMED, exc.detail or exc.reason, **extra)


def promise_keys(message: Message) -> list[str]:
    """The promise-keys of an answer as a list of strings; raise MalformedMessage when invalid."""
    keys = message.get("promise-keys")
    if keys is None:
        return []
    if isinstance(keys, (str, dict)) or not isinstance(keys, (list, frozenset, set)):
        raise MalformedMessage(E_BAD_FIELD, "promise-keys must be a set or array of keys")
    out = []
    for key in keys:
        if not isinstance(key, str):
            raise MalformedMessage(E_BAD_FIELD, "promise-keys must hold keywords or strings")
        out.append(str(key))
    return out


def optional_text(message: Message, field: str) -> str | None:
    """A string field that may be absent; raise MalformedMessage when it has another type."""
    value = message.get(field)
    if value is None or isinstance(value, str):
        return value
    raise MalformedMessage(E_BAD_FIELD, f"{field} must be a string")
