"""Handlers that only test servers load (CHAT_WS_EXTRA_HANDLERS=tests.handlers_for_tests)."""

from chat_ws.dispatch import Context, handler
from chat_ws.types import Message


@handler("test-raise")
async def raise_error(ctx: Context, message: Message) -> Message:
    """A handler with a bug."""
    raise RuntimeError("a bug in an application handler")


@handler("test-sync-echo")
def sync_echo(ctx: Context, message: Message) -> Message:
    """A sync handler, run in a thread."""
    return {"dispatch-key": "test-echo", "text": message.get("text")}
