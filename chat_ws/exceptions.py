"""Every exception chat_ws raises, and the websocket close codes it uses."""

from __future__ import annotations

# Close codes (RFC 6455 section 7.4 and the 4000-4999 private range).
WS_1008_POLICY_VIOLATION = 1008
WS_1009_MESSAGE_TOO_BIG = 1009
WS_1012_SERVICE_RESTART = 1012  # the process is stopping (SIGTERM): reconnect at once, to another one
WS_4001_REPLACED = 4001  # another connection with the same client-id took over
WS_4002_FORGOTTEN = 4002  # the server forgot the client (close-channel, sweep, admin)
WS_4003_CLIENT_ID_BOUND = 4003  # the client-id belongs to another user or session
WS_4004_TOO_MANY_CONNECTIONS = 4004  # the user already holds MAX_CONNECTIONS_PER_USER sockets
WS_4008_POLICY_VIOLATION = 4008  # 1008 where the server cannot send 1008 (rate abuse under daphne)
WS_4009_MESSAGE_TOO_BIG = 4009  # 1009 where the server cannot send 1009 (autobahn under daphne)
WS_4012_SERVICE_RESTART = 4012  # 1012 where the server cannot send 1012 (autobahn under daphne)


class ChatWsError(Exception):
    """Base class of chat_ws errors."""


class ConfigurationError(ChatWsError):
    """A chat_ws setting is missing or invalid."""


class StoreUnavailable(ChatWsError):
    """The promise/presence store could not be reached."""


class MalformedMessage(ChatWsError):
    """An incoming frame could not be decoded into a message map."""

    def __init__(self, reason: str, detail: str = "") -> None:
        super().__init__(f"{reason}: {detail}" if detail else reason)
        self.reason = reason
        self.detail = detail


class InvalidMessage(ChatWsError):
    """An outgoing message is not a map with a valid dispatch-key."""


class QuestionError(ChatWsError):
    """Base class of the ways an ask() can fail."""

    def __init__(self, message: str = "", *, p_key: str = "", client_id: str = "") -> None:
        super().__init__(message or self.__doc__)
        self.p_key = p_key
        self.client_id = client_id


class AnswerTimeout(QuestionError, TimeoutError):
    """The question was not answered within its timeout."""


class ClientGone(QuestionError):
    """The client was forgotten, or did not come back within the reconnect grace period."""


class QuestionCancelled(QuestionError):
    """The question was cancelled before it was answered."""


class QuestionSuperseded(QuestionCancelled):
    """Another asker of the same step took the question over (a second run of the conversation)."""


class TooManyPending(QuestionError):
    """The client already has the maximum number of pending questions."""


class StoreLost(QuestionError):
    """The question's record vanished from the store (for example a restarted Redis)."""
