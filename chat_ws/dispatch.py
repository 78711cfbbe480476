"""The handler registry: dispatch-key -> function, and running handlers without blocking."""

from __future__ import annotations

import asyncio
import inspect
import logging
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from typing import Any

from channels.db import database_sync_to_async

from chat_ws import delivery, protocol
from chat_ws.exceptions import MalformedMessage, StoreUnavailable
from chat_ws.runtime import runtime
from chat_ws.types import Message

logger = logging.getLogger(__name__)


@dataclass
class Context:
    """What a handler knows about the connection its message came from."""

    client_id: str
    channel_name: str = ""
    scope: dict[str, Any] = field(default_factory=dict)

    @property
    def user(self) -> Any:
        """The connection's user (AnonymousUser without AuthMiddlewareStack)."""
        return self.scope.get("user")

    async def reply(self, message: Message) -> None:
        """Send a message to this client, wherever its socket is now."""
        await delivery.deliver(self.client_id, message)


HandlerFunc = Callable[[Context, Message], Awaitable[Message | None] | Message | None]


@dataclass(frozen=True)
class Handler:
    """One registered handler."""

    key: str
    func: Callable[[Context, Message], Awaitable[Message | None]]
    inline: bool


_registry: dict[str, Handler] = {}  # configuration (made by @handler at import), not process state


def handler(
    key: str, *, inline: bool = False, replace: bool = False
) -> Callable[[HandlerFunc], HandlerFunc]:
    """Register a function for a dispatch-key.

    The function takes ``(ctx, message)`` and may be sync (run in a thread) or async. It runs as
    its own task unless ``inline=True`` (for quick handlers whose order matters); a returned map
    is sent back to the client, ``None`` sends nothing.
    """
    protocol.validate({"dispatch-key": key})

    def decorator(func: HandlerFunc) -> HandlerFunc:
        if key in _registry and not replace and _registry[key].func is not func:
            raise ValueError(f"a handler for {key!r} is already registered")
        if inspect.iscoroutinefunction(func):
            wrapped = func
        else:
            wrapped = database_sync_to_async(func)
        _registry[key] = Handler(key, wrapped, inline)  # type: ignore[arg-type]
        return func

    return decorator


def unregister(key: str) -> None:
    """Remove the handler of a dispatch-key (tests and apps that replace built-ins)."""
    _registry.pop(key, None)


def registered() -> dict[str, Handler]:
    """A copy of the registry."""
    return dict(_registry)


async def dispatch(ctx: Context, key: str, message: Message) -> None:
    """Route one decoded message; unknown keys get an error reply."""
    found = _registry.get(key)
    if found is None:
        logger.warning("unknown dispatch-key %r from %s", key, ctx.client_id)
        await ctx.reply(
            protocol.error_reply(
                protocol.E_UNKNOWN_KEY, f"no handler for {key}", **{"in-reply-to": key}
            )
        )
        return
    if found.inline:
        await _invoke(found, ctx, message)
        return
    tasks = runtime().handler_tasks
    task = asyncio.create_task(_invoke(found, ctx, message), name=f"chat_ws:{key}")
    tasks.add(task)
    task.add_done_callback(tasks.discard)


async def _invoke(found: Handler, ctx: Context, message: Message) -> None:
    try:
        result = await found.func(ctx, message)
        if result is not None:
            await ctx.reply(result)
    except asyncio.CancelledError:
        raise
    except StoreUnavailable as exc:
        logger.warning("%s from %s failed: %s", found.key, ctx.client_id, exc)
        await _safe_reply(
            ctx,
            protocol.error_reply(
                protocol.E_UNAVAILABLE, "the server cannot reach its store; retry later", **{"in-reply-to": found.key}
            ),
        )
    except MalformedMessage as exc:
        logger.info("bad %s message from %s: %s", found.key, ctx.client_id, exc)
        await _safe_reply(ctx, protocol.malformed_reply(exc, found.key))
    except Exception:
        logger.exception("handler for %r failed (client %s)", found.key, ctx.client_id)
        await _safe_reply(
            ctx,
            protocol.error_reply(
                protocol.E_HANDLER_FAILED, f"the {found.key} handler failed", **{"in-reply-to": found.key}
            ),
        )


async def _safe_reply(ctx: Context, message: Message) -> None:
    try:
        await ctx.reply(message)
    except StoreUnavailable as exc:  # an outage, not a bug: no traceback
        logger.warning("could not send an error reply to %s: %s", ctx.client_id, exc)
    except Exception:
        logger.warning("could not send an error reply to %s", ctx.client_id, exc_info=True)


def running_tasks() -> int:
    """How many handler tasks run in this process."""
    return len(runtime().handler_tasks)
