"""The demo interviewer over real sockets: a whole interview, and one that outlives its server."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from stbd_project.interview.script import INTRO, QUESTIONS, RESTARTED, RESUMED
from tests.live import LiveServer
from tests.wsclient import WsClient

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("redis", [False, True], ids=["memory", "redis"])
async def test_whole_interview_ends_with_summary_table(live_servers: Any, redis: bool) -> None:
    server = live_servers(redis=redis)
    async with WsClient(server.ws_url) as client:
        await client.send({"dispatch-key": "start-conversation"})
        asked = []
        for i in range(len(QUESTIONS)):
            question = await client.next_question(timeout=1.0 if i == 0 else 5.0)
            asked.append(question["text"])
            await client.answer(f"answer {i}")
        table = await client.recv_until("load-table")
        rows = table["table"]["table-body"]
        assert [r["answer"] for r in rows] == [f"answer {i}" for i in range(len(QUESTIONS))]
        assert asked == [text for _, text in QUESTIONS]


async def test_interview_continues_after_its_server_is_killed(live_servers: Any, live_db: Any, key_prefix: str) -> None:
    first = live_servers(redis=True)
    other = live_servers(redis=True)
    client = await WsClient(first.ws_url).connect()
    await client.send({"dispatch-key": "start-conversation"})
    asked = []
    for i in range(2):
        question = await client.next_question()
        asked.append(question["text"])
        await client.answer(f"answer {i}")
    pending = await client.next_question()
    first.kill()  # SIGKILL: the asking task dies with its process; the question stays in Redis

    moved = await WsClient(other.ws_url, client.client_id).connect()
    again = await moved.next_question()
    assert again["p-key"] == pending["p-key"] and again["text"] == pending["text"]
    await moved.send({"dispatch-key": "resume-conversation"})
    await moved.answer("answer 2")
    asked.append(again["text"])
    for i in range(3, len(QUESTIONS)):
        question = await moved.next_question()
        asked.append(question["text"])
        await moved.answer(f"answer {i}")
    table = await moved.recv_until("load-table")
    assert [r["answer"] for r in table["table"]["table-body"]] == [f"answer {i}" for i in range(len(QUESTIONS))]
    assert asked == [text for _, text in QUESTIONS], "a question was skipped or asked twice"
    await moved.close()
    await client.close()


async def test_resume_restarts_an_interview_lost_with_an_in_memory_server(live_servers: Any) -> None:
    server = live_servers(redis=False)
    client = await WsClient(server.ws_url).connect()
    await client.send({"dispatch-key": "start-conversation"})
    first = await client.next_question()
    await client.answer("answer 0")
    second = await client.next_question()
    server.stop()
    restarted = LiveServer(server.db, redis_url=None, prefix=server.prefix, port=server.port).start()
    try:
        again = await WsClient(server.ws_url, client.client_id).connect()
        await again.send({"dispatch-key": "resume-conversation"})
        question = await again.next_question()
        assert question["text"] == second["text"] != first["text"]
        await again.close()
    finally:
        restarted.stop()


async def _forget_by_admin(server: LiveServer, client: WsClient) -> None:
    """What the admin's force disconnect does, from another process through Redis."""
    code = f"from chat_ws import api; api.forget_sync({client.client_id!r}, 'forced by an administrator')"
    done = await asyncio.to_thread(server.manage, "shell", "-c", code)
    assert done.returncode == 0, done.stderr


async def _forget_by_close_channel(server: LiveServer, client: WsClient) -> None:
    await client.send({"dispatch-key": "close-channel"})


@pytest.mark.parametrize(
    ("redis", "forget", "answered", "notice"),
    [
        (True, _forget_by_admin, 2, RESUMED),
        (True, _forget_by_admin, 0, RESTARTED),
        (False, _forget_by_close_channel, 1, RESUMED),
    ],
    ids=["admin-mid-interview", "admin-first-question", "close-channel"],
)
async def test_a_forgotten_client_is_told_the_interview_starts_again(
    live_servers: Any, redis: bool, forget: Any, answered: int, notice: str
) -> None:
    server = live_servers(redis=redis)
    client = await WsClient(server.ws_url).connect()
    await client.send({"dispatch-key": "start-conversation"})
    for i in range(answered):
        await client.next_question()
        await client.answer(f"answer {i}")
    pending = await client.next_question()
    await forget(server, client)
    assert await client.closed() == 4002

    again = await WsClient(server.ws_url, client.client_id).connect()
    await again.send({"dispatch-key": "resume-conversation"})
    said: list[str] = []
    while True:
        message = await again.recv_until("iviewr-says")
        if message.get("p-key"):
            break
        said.append(message["text"])
    assert said == [notice], "the restarted interview did not say why it asks again"
    assert INTRO not in said
    assert message["text"] == pending["text"] == QUESTIONS[answered][1]
    assert message["p-key"] != pending["p-key"]
    await again.answer(f"answer {answered}")
    following = await again.next_question()
    assert following["text"] == QUESTIONS[answered + 1][1]
    await again.close()


async def test_loadtest_conversation_reports_latencies(live_servers: Any) -> None:
    server = live_servers(redis=True, CHAT_WS_RATE_LIMIT="100000", CHAT_WS_RATE_BURST="100000")
    async with WsClient(server.ws_url) as client:
        await client.send({"dispatch-key": "start-conversation", "conversation-id": "loadtest", "questions": 25})
        for i in range(25):
            await client.next_question()
            await client.answer(f"a{i}")
        done = await client.recv_until("loadtest-done")
        assert done["asked"] == 25 and done["answered"] == 25
        assert 0 < done["p50-ms"] <= done["p99-ms"]
