"""Built-in handlers of the original protocol: ping, alive-confirm, answers, close-channel."""

from __future__ import annotations

from typing import Any

from chat_ws import presence, promises, protocol
from chat_ws.dispatch import Context, handler
from chat_ws.types import Message


@handler(protocol.PING, inline=True)
async def ping(ctx: Context, message: Message) -> Message:
    """Record the ping and confirm it."""
    await presence.touch(ctx.client_id)
    reply: dict[str, Any] = {"dispatch-key": protocol.PING_CONFIRM}
    if "ping-id" in message:
        reply["ping-id"] = message["ping-id"]
    return reply


@handler(protocol.ALIVE_CONFIRM, inline=True)
async def alive_confirm(ctx: Context, message: Message) -> None:
    """The client answered an alive? check."""
    await presence.touch(ctx.client_id)


@handler(protocol.DOMAIN_EXPERT_SAYS, inline=True)
async def domain_expert_says(ctx: Context, message: Message) -> Message:
    """An answer: resolve the most recent pending question it names."""
    question = await promises.answer(ctx.client_id, message)
    if question is None:
        return protocol.error_reply(
            protocol.E_NO_MATCHING_QUESTION,
            "no pending question matches the answer's promise-keys",
            **{"in-reply-to": protocol.DOMAIN_EXPERT_SAYS},
        )
    return promises.clear_message(question)


@handler(protocol.CLOSE_CHANNEL, inline=True)
async def close_channel(ctx: Context, message: Message) -> None:
    """The client is leaving: forget it."""
    await presence.forget(ctx.client_id, "close-channel")
