"""Handlers of the demo site: start-conversation and resume-conversation."""

from __future__ import annotations

import logging

from django.conf import settings
from django.utils import timezone

from chat_ws.api import E_BAD_FIELD, Context, Message, answer_orphaned, error_reply, handler
from stbd_project.interview import interviewer

logger = logging.getLogger(__name__)

answer_orphaned.connect(interviewer.continue_after_orphaned_answer, dispatch_uid="interview-orphans")

DEFAULT_CONVERSATION = "process"
MAX_LOADTEST_QUESTIONS = 100_000


def _conversation(message: Message) -> str:
    value = message.get("conversation-id") or DEFAULT_CONVERSATION
    if not isinstance(value, str) or not value.replace("-", "").replace("_", "").isalnum() or len(value) > 64:
        raise ValueError("conversation-id must be a short name")
    return value


@handler("start-conversation")
async def start_conversation(ctx: Context, message: Message) -> Message | None:
    """Start the scripted interview (or the load-test conversation)."""
    requested_at = timezone.now()  # before any wait: a start older than a resume since is stale
    try:
        conversation = _conversation(message)
    except ValueError as exc:
        return error_reply(E_BAD_FIELD, str(exc), **{"in-reply-to": "start-conversation"})
    if conversation == "loadtest":
        if not getattr(settings, "STBD_LOADTEST", False):
            return error_reply(E_BAD_FIELD, "the load-test conversation is disabled")
        count = message.get("questions", 10)
        if not isinstance(count, int) or isinstance(count, bool) or not 0 < count <= MAX_LOADTEST_QUESTIONS:
            return error_reply(E_BAD_FIELD, f"questions must be 1..{MAX_LOADTEST_QUESTIONS}")
        return await interviewer.loadtest(ctx.client_id, count)
    await interviewer.restart(ctx.client_id, conversation, requested_at)
    return None


@handler("resume-conversation", inline=True)
async def resume_conversation(ctx: Context, message: Message) -> None:
    """Continue an interview after a reconnect.

    Inline: the socket's later frames (an answer to the re-sent question) wait until resume has
    seen the state they change. As a task, a fast answer could resolve the held question first;
    resume then found nothing pending and asked that question again while the orphaned answer
    was dropped.
    """
    try:
        conversation = _conversation(message)
    except ValueError:
        conversation = DEFAULT_CONVERSATION
    await interviewer.resume(ctx.client_id, conversation)
