"""Any process can ask, any process can receive the answer: two daphne processes, one Redis."""

from __future__ import annotations

import asyncio
import sys
from typing import Any

import pytest
import websockets

from tests.live import ROOT
from tests.wsclient import WsClient

pytestmark = [pytest.mark.integration, pytest.mark.redis]

ASK_TIMEOUT = 30.0  # seconds the asking command may take (it starts Django first)


async def start_ask(server: Any, client_id: str, text: str) -> asyncio.subprocess.Process:
    return await asyncio.create_subprocess_exec(
        sys.executable, "manage.py", "chat_ws_ask", client_id, text, "--conversation", "process",
        "--timeout", "60",
        cwd=ROOT, env=server.env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )


async def result(proc: asyncio.subprocess.Process) -> str:
    out, err = await asyncio.wait_for(proc.communicate(), ASK_TIMEOUT)
    assert proc.returncode == 0, err.decode()
    return out.decode().strip()


async def test_ask_from_a_third_process_and_answer_after_moving_to_another_server(live_servers: Any) -> None:
    first = live_servers(redis=True)
    second = live_servers(redis=True)
    client = await WsClient(first.ws_url).connect()

    asker = await start_ask(first, client.client_id, "What do you make?")
    question = await client.next_question(timeout=ASK_TIMEOUT)
    assert question["text"] == "What do you make?"
    await client.answer("Bicycles.")
    assert await result(asker) == "Bicycles."
    await client.recv_until("clear-promise-keys")

    asker = await start_ask(first, client.client_id, "How many a week?")
    question = await client.next_question(timeout=ASK_TIMEOUT)
    p_key = str(question["p-key"])
    await client.ws.close()  # the connection drops; the question is held for the grace period

    moved = await WsClient(second.ws_url, client.client_id).connect()
    again = await moved.next_question()
    assert str(again["p-key"]) == p_key and again["text"] == "How many a week?"
    await moved.answer("About 400.")
    assert await result(asker) == "About 400."
    cleared = await moved.recv_until("clear-promise-keys")
    assert [str(k) for k in cleared["promise-keys"]] == [p_key]
    await moved.close()


async def test_duplicate_answers_to_two_processes_resolve_once(live_servers: Any) -> None:
    first = live_servers(redis=True)
    second = live_servers(redis=True)
    old = await WsClient(first.ws_url).connect()
    asker = await start_ask(first, old.client_id, "Once only?")
    question = await old.next_question(timeout=ASK_TIMEOUT)
    new = await WsClient(second.ws_url, old.client_id).connect()
    await new.next_question()
    answer = {"dispatch-key": "domain-expert-says", "msg-text": "Yes.", "promise-keys": frozenset({str(question["p-key"])})}

    async def send_quietly(client: WsClient) -> None:
        try:
            await client.send(answer)
        except websockets.ConnectionClosed:
            pass

    await asyncio.gather(send_quietly(old), send_quietly(new))
    assert await result(asker) == "Yes."

    outcomes = []
    for client in (old, new):
        try:
            while True:
                message = await client.recv(timeout=2.0)
                if message["dispatch-key"] in ("clear-promise-keys", "error"):
                    outcomes.append(message["dispatch-key"])
                    break
        except (websockets.ConnectionClosed, asyncio.TimeoutError):
            pass
    assert outcomes.count("clear-promise-keys") <= 1
    assert "clear-promise-keys" in outcomes or outcomes == ["error"] or outcomes == []
    out = first.manage("shell", "-c", "from chat_ws.api import pending_sync; print(len(pending_sync()))")
    assert out.stdout.strip().endswith("0"), out.stderr
    await old.close()
    await new.close()
