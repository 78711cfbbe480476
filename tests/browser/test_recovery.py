"""The demo chat page when something went wrong: a restarted server, a refused answer, a cancelled question."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the browser fixture skips, or fails under CI=true, with the reason
    expect = None  # type: ignore[assignment]

from stbd_project.interview.script import QUESTIONS, RESTARTED, RESUMED
from tests.browser.test_chat_page import ANSWERS, QUESTION, RECORD_FRAMES, Chat
from tests.live import LiveServer

pytestmark = pytest.mark.browser

BACK_WITHIN = 3_000  # milliseconds the page may take to be back once the server listens
REFUSED = "WebSocket connection to"  # the browser logs each refused attempt during an outage


async def open_with_frozen_timers(context: Any, url: str) -> Chat:
    """The chat page with the page's timers under the test's control: no retry fires by itself."""
    page = await context.new_page()
    await page.clock.install()
    await page.add_init_script(RECORD_FRAMES)
    chat = Chat(page)
    await page.goto(url)
    await expect(chat.badge).to_have_attribute("data-state", "open")
    await page.clock.pause_at(await page.evaluate("Date.now()") + 1_000)
    return chat


async def stop_and_restart(chat: Chat, old: LiveServer, restart_server: Any) -> None:
    """Stop the server, see the page reconnecting, and start a new process on the same port."""
    await asyncio.to_thread(old.stop)
    await expect(chat.badge).to_have_text("Reconnecting…")
    await expect(chat.page.get_by_role("button", name="Reconnect now")).to_be_visible()
    await asyncio.to_thread(restart_server, old)


async def test_reconnect_now_rejoins_a_restarted_server_at_once(
    live_servers: Any, restart_server: Any, context: Any
) -> None:
    old = live_servers(redis=False)
    chat = await open_with_frozen_timers(context, old.http_url)
    now = chat.page.get_by_role("button", name="Reconnect now")
    await expect(now).to_be_hidden()
    await chat.start()
    await expect(chat.page.locator(QUESTION)).to_have_count(1)

    await stop_and_restart(chat, old, restart_server)
    await expect(chat.badge).to_have_text("Reconnecting…")  # its retry timer is frozen
    await now.click()
    await expect(chat.badge).to_have_text("Connected", timeout=BACK_WITHIN)
    await expect(now).to_be_hidden()

    # The in-memory server lost the interview's question: the interview says it starts again
    # and asks the first question anew, below its remark.
    bubbles = chat.page.locator("#transcript .msg--iviewr .bubble")
    await expect(bubbles.nth(-2)).to_have_text(RESTARTED)
    await expect(bubbles.last).to_have_text(QUESTIONS[0][1])
    await chat.input.fill(ANSWERS[0])
    await chat.input.press("Enter")
    await expect(bubbles.last).to_have_text(QUESTIONS[1][1])
    assert [e for e in chat.errors if REFUSED not in e] == []


async def test_an_answer_to_a_lost_question_comes_back_into_the_answer_box(
    live_servers: Any, restart_server: Any, context: Any
) -> None:
    old = live_servers(redis=False)
    chat = await open_with_frozen_timers(context, old.http_url)
    await chat.start()
    await chat.answer(1, ANSWERS[0])
    await expect(chat.page.locator(QUESTION)).to_have_count(2)

    await asyncio.to_thread(old.stop)
    await expect(chat.badge).to_have_text("Reconnecting…")
    await chat.input.fill(ANSWERS[1])  # queued: the question it answers dies with the server
    await chat.input.press("Enter")
    await expect(chat.page.locator("#transcript .msg--me.msg--queued")).to_have_count(1)
    await expect(chat.input).to_have_value("")
    await asyncio.to_thread(restart_server, old)
    await chat.page.get_by_role("button", name="Reconnect now").click()
    await expect(chat.badge).to_have_text("Connected", timeout=BACK_WITHIN)

    note = chat.page.locator("#transcript .msg--note .bubble").last
    await expect(note).to_contain_text("Your answer was not recorded")
    await expect(note).to_contain_text("It is back in the answer box")
    await expect(chat.input).to_have_value(ANSWERS[1])
    await expect(chat.page.locator("#transcript .msg--me.msg--rejected .bubble")).to_have_text([ANSWERS[1]])
    bubbles = chat.page.locator("#transcript .msg--iviewr .bubble")
    await expect(bubbles.nth(-2)).to_have_text(RESUMED)
    await expect(bubbles.last).to_have_text(QUESTIONS[1][1])

    await expect(chat.page.locator("#send")).to_be_enabled()
    await chat.input.press("Enter")  # the same words, now to the question asked anew
    await expect(bubbles.last).to_have_text(QUESTIONS[2][1])
    asked_anew = await chat.page.locator(QUESTION).last.get_attribute("data-p-key")
    sent = [f for f in (await chat.frames("out"))[-1] if f["dispatch-key"] == "domain-expert-says"]
    assert [f["msg-text"] for f in sent] == [ANSWERS[1], ANSWERS[1]]
    assert sent[1]["promise-keys"] != sent[0]["promise-keys"]
    assert asked_anew not in sent[1]["promise-keys"]  # it answered question 2, not the new question 3
    assert [e for e in chat.errors if REFUSED not in e] == []


async def test_a_question_cancelled_by_an_operator_shows_why(live_servers: Any, context: Any) -> None:
    server = live_servers(redis=True)  # the operator's process reaches the page through Redis
    chat = await Chat.open(context, server.http_url)
    await chat.start()
    question = chat.page.locator(QUESTION)
    await expect(question).to_have_count(1)
    p_key = await question.get_attribute("data-p-key")

    code = f"from chat_ws import api; assert api.cancel_sync({p_key!r}, 'we will ask this differently')"
    done = await asyncio.to_thread(server.manage, "shell", "-c", code)
    assert done.returncode == 0, done.stderr

    note = chat.page.locator("#transcript .msg--note .bubble")
    await expect(note).to_have_text(["The interviewer withdrew this question (we will ask this differently)."])
    await expect(chat.page.locator("#transcript .msg--iviewr.msg--withdrawn")).to_have_count(1)
    await expect(chat.page.locator("#send")).to_be_disabled()
    cleared = [f for f in (await chat.frames())[0] if f["dispatch-key"] == "clear-promise-keys"]
    assert cleared[-1]["reason"] == "cancelled"
    assert chat.errors == []
