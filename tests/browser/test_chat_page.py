"""The demo chat page in a real Chromium against real daphne processes."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

try:
    from playwright.async_api import Page, expect
except ImportError:  # the browser fixture skips, or fails under CI=true, with the reason
    Page = expect = None  # type: ignore[assignment,misc]

from stbd_project.interview.script import QUESTIONS
from tests.live import ROOT

pytestmark = pytest.mark.browser

QUESTION = "#transcript .msg--iviewr[data-p-key]"
ANSWERS = [
    "Mountain and city bicycles, about 40 models in 3 frame sizes.",
    "Cut and weld the frames, paint, assemble wheels, final assembly, test ride, pack and ship.",
    "The paint line: one colour at a time, and each frame needs 6 hours to cure.",
    "Dealers order online every week; we know about 3 weeks ahead, the rest is forecast.",
    "About 2 hours to clean the paint line between colours; assembly changes in 10 minutes.",
    "Fewer late orders to dealers in spring.",
]


# Records every frame of every socket the page opens, from the first one (Playwright's own
# websocket events attach a moment later and can miss the frames sent right at connect).
RECORD_FRAMES = """
(() => {
  const Native = window.WebSocket;
  window.__frames = [];
  window.WebSocket = class extends Native {
    constructor(...args) {
      super(...args);
      const socket = window.__frames.push([]) - 1;
      const record = (dir, data) => window.__frames[socket].push([dir, data]);
      this.addEventListener("message", (e) => record("in", e.data));
      const send = this.send.bind(this);
      this.send = (data) => { record("out", data); return send(data); };
    }
  };
})();
"""


class Chat:
    """One tab with the chat page, and every chat_ws frame it sent and received."""

    def __init__(self, page: Page) -> None:
        self.page = page
        self.errors: list[str] = []
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        page.on("console", lambda msg: msg.type == "error" and self.errors.append(msg.text))

    async def frames(self, direction: str = "in") -> list[list[dict[str, Any]]]:
        """Decoded frames per socket, in the order the page opened its sockets."""
        sockets = await self.page.evaluate("window.__frames")
        return [[json.loads(data) for d, data in frames if d == direction] for frames in sockets]

    @classmethod
    async def open(cls, context: Any, url: str) -> Chat:
        page = await context.new_page()
        await page.add_init_script(RECORD_FRAMES)
        chat = cls(page)
        await chat.page.goto(url)
        await expect(chat.badge).to_have_attribute("data-state", "open")
        await expect(chat.input).to_be_focused()
        return chat

    @property
    def badge(self) -> Any:
        return self.page.locator("#connection")

    @property
    def input(self) -> Any:
        return self.page.locator("#answer")

    async def start(self) -> None:
        await self.page.get_by_role("button", name="Start interview").click()

    async def answer(self, number: int, text: str) -> None:
        """Wait for question `number` (1-based), check it, and answer it with Enter."""
        questions = self.page.locator(QUESTION)
        await expect(questions).to_have_count(number)
        await expect(questions.nth(number - 1).locator(".bubble")).to_have_text(QUESTIONS[number - 1][1])
        await expect(self.input).to_be_focused()
        await self.input.fill(text)
        await self.input.press("Enter")
        await expect(self.page.locator("#transcript .msg--me")).to_have_count(number)
        await expect(self.input).to_have_value("")

    async def expect_summary(self, answers: list[str]) -> None:
        table = self.page.get_by_role("table", name="What you told the interviewer")
        await expect(table).to_be_visible()
        await expect(table.locator("thead th")).to_have_text(["Topic", "Question", "Your answer"])
        await expect(table.locator("tbody tr")).to_have_count(len(QUESTIONS))
        await expect(table.locator("tbody td:last-child")).to_have_text(answers)
        await expect(table.locator("tbody th[scope=row]")).to_have_text([qid for qid, _ in QUESTIONS])

    async def questions_received(self) -> list[list[tuple[str, str]]]:
        """(text, p-key) of every question frame, per socket, in order of arrival."""
        return [
            [(f["text"], f["p-key"]) for f in frames if f.get("dispatch-key") == "iviewr-says" and f.get("p-key")]
            for frames in await self.frames()
        ]


async def finish_interview(chat: Chat, answers: list[str]) -> None:
    await chat.start()
    for number, text in enumerate(answers, start=1):
        await chat.answer(number, text)
    await chat.expect_summary(answers)


async def test_interview_from_start_to_summary(live_servers: Any, context: Any) -> None:
    server = live_servers(redis=False)
    chat = await Chat.open(context, server.http_url)
    await finish_interview(chat, ANSWERS)
    bubbles = chat.page.locator("#transcript .msg--iviewr .bubble")
    await expect(bubbles.last).to_have_text("Thank you! Here is a summary of what you told me.")
    (questions,) = await chat.questions_received()
    assert [text for text, _ in questions] == [text for _, text in QUESTIONS]
    answers = [f for f in (await chat.frames("out"))[0] if f["dispatch-key"] == "domain-expert-says"]
    assert [a["promise-keys"] for a in answers] == [[p_key] for _, p_key in questions]
    await expect(chat.page.locator("#send")).to_be_disabled()  # no question is open any more
    assert chat.errors == []


async def test_reconnects_to_a_new_server_and_continues_the_interview(
    live_servers: Any, restart_server: Any, context: Any
) -> None:
    old = live_servers(redis=True)
    chat = await Chat.open(context, old.http_url)
    await chat.start()
    await chat.answer(1, ANSWERS[0])
    await chat.answer(2, ANSWERS[1])
    await expect(chat.page.locator(QUESTION)).to_have_count(3)

    await asyncio.to_thread(old.stop)
    await expect(chat.badge).to_have_attribute("data-state", "reconnecting")
    await expect(chat.badge).to_have_text("Reconnecting…")
    # Answered during the outage: queued in the page, sent once the socket is back.
    await chat.input.fill(ANSWERS[2])
    await chat.input.press("Enter")
    queued = chat.page.locator("#transcript .msg--me.msg--queued")
    await expect(queued).to_have_count(1)
    await expect(queued.locator(".queued-note")).to_have_text("Will be sent when reconnected")

    await asyncio.to_thread(restart_server, old)
    await expect(chat.badge).to_have_attribute("data-state", "open", timeout=20_000)
    await expect(chat.badge).to_have_text("Connected")
    await expect(queued).to_have_count(0)

    # The question pending at the restart reaches the new socket again (the page shows it
    # once); the queued answer resolves it and the interview goes on from question 4.
    for number in range(4, len(QUESTIONS) + 1):
        await chat.answer(number, ANSWERS[number - 1])
    await chat.expect_summary(ANSWERS)
    texts = await chat.page.locator(f"{QUESTION} .bubble").all_inner_texts()
    assert texts == [text for _, text in QUESTIONS]

    sockets = await chat.questions_received()
    before, after = sockets[0], sockets[-1]
    assert [text for text, _ in before] == [text for _, text in QUESTIONS[:3]]
    assert after, "the new server never asked anything"
    assert after[0] == before[2], "the pending question was not re-sent first, with its p-key"
    answered = {text for _, text in QUESTIONS[:2]}
    assert not answered & {text for text, _ in after}, "an answered question was asked again"
    assert list(dict.fromkeys(text for text, _ in after)) == [text for _, text in QUESTIONS[2:]]
    sent = (await chat.frames("out"))[-1]
    assert sent[0] == {"dispatch-key": "resume-conversation"}
    assert sent[1] == {"dispatch-key": "domain-expert-says", "msg-text": ANSWERS[2], "promise-keys": [before[2][1]]}
    refused = "WebSocket connection to"  # the browser logs each refused attempt during the outage
    assert [e for e in chat.errors if refused not in e] == []


async def test_a_reload_keeps_the_conversation(live_servers: Any, context: Any) -> None:
    server = live_servers(redis=False)
    chat = await Chat.open(context, server.http_url)
    client_id = await chat.page.evaluate("sessionStorage.getItem('chat_ws.client-id')")
    await chat.start()
    await chat.answer(1, ANSWERS[0])
    await expect(chat.page.locator(QUESTION)).to_have_count(2)
    await chat.page.reload()
    await expect(chat.badge).to_have_attribute("data-state", "open")
    assert await chat.page.evaluate("sessionStorage.getItem('chat_ws.client-id')") == client_id
    await expect(chat.page.locator(QUESTION)).to_have_count(2)  # restored, the re-sent question not doubled
    await expect(chat.page.locator("#send")).to_be_enabled()  # the pending question came back
    for number in range(2, len(QUESTIONS) + 1):
        await chat.answer(number, ANSWERS[number - 1])
    await chat.expect_summary(ANSWERS)
    assert chat.errors == []


async def test_two_tabs_hold_two_independent_conversations(live_servers: Any, context: Any) -> None:
    server = live_servers(redis=False)
    one = await Chat.open(context, server.http_url)
    two = await Chat.open(context, server.http_url)
    client_ids = [
        await tab.page.evaluate("sessionStorage.getItem('chat_ws.client-id')") for tab in (one, two)
    ]
    assert client_ids[0] and client_ids[1] and client_ids[0] != client_ids[1]

    answers_one = [f"One: {a}" for a in ANSWERS]
    answers_two = [f"Two: {a}" for a in ANSWERS]
    await one.start()
    await two.start()
    for number in range(1, len(QUESTIONS) + 1):
        await one.answer(number, answers_one[number - 1])
        await expect(two.page.locator(QUESTION)).to_have_count(number)  # two is still on its question
        await two.answer(number, answers_two[number - 1])
    await one.expect_summary(answers_one)
    await two.expect_summary(answers_two)
    assert "Two:" not in await one.page.locator("#transcript").inner_text()
    assert "One:" not in await two.page.locator("#transcript").inner_text()
    assert one.errors == [] and two.errors == []


async def test_a_duplicated_tab_takes_over_and_the_old_one_stays_closed(live_servers: Any, context: Any) -> None:
    server = live_servers(redis=False)
    old = await Chat.open(context, server.http_url)
    client_id = await old.page.evaluate("sessionStorage.getItem('chat_ws.client-id')")
    await old.start()
    await expect(old.page.locator(QUESTION)).to_have_count(1)

    # A duplicated tab starts with a copy of the sessionStorage, hence the same client-id.
    page = await context.new_page()
    await page.add_init_script(
        f"sessionStorage.getItem('chat_ws.client-id') || sessionStorage.setItem('chat_ws.client-id', {json.dumps(client_id)})"
    )
    await page.add_init_script(RECORD_FRAMES)
    new = Chat(page)
    await page.goto(server.http_url)
    await expect(new.badge).to_have_attribute("data-state", "open")

    await expect(old.badge).to_have_attribute("data-state", "closed")
    await expect(old.page.locator("#banner-text")).to_have_text("This conversation continues in another tab.")
    await new.answer(1, ANSWERS[0])  # the pending question moved to the new tab with the socket
    await expect(new.page.locator(QUESTION)).to_have_count(2)
    assert len(await old.frames()) == 1, "the replaced tab reconnected and would fight the new one"

    await old.page.get_by_role("button", name="Continue here").click()  # the person's choice
    await expect(old.badge).to_have_attribute("data-state", "open")
    await expect(new.badge).to_have_attribute("data-state", "closed")
    assert old.errors == [] and new.errors == []


async def test_screenshot_of_a_finished_interview(live_servers: Any, context: Any) -> None:
    server = live_servers(redis=False)
    chat = await Chat.open(context, server.http_url)
    await finish_interview(chat, ANSWERS)
    await chat.input.blur()
    out = ROOT / "test-results" / "chat-finished.png"
    out.parent.mkdir(exist_ok=True)
    await chat.page.screenshot(path=str(out), animations="disabled")
    assert out.stat().st_size > 10_000  # docs/chat-demo.png is a copy taken by hand
