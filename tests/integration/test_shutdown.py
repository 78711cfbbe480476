"""SIGTERM to a server process: its sockets close with 1012 (4012 under daphne), it exits in
bounded time, and the question its asker was waiting on moves to another process."""

from __future__ import annotations

import asyncio
import signal
import subprocess
import time
import urllib.request
from typing import Any

import pytest
import websockets

from chat_ws.exceptions import WS_1012_SERVICE_RESTART, WS_4012_SERVICE_RESTART
from stbd_project.interview.script import QUESTIONS
from tests.wsclient import WsClient

pytestmark = [pytest.mark.integration, pytest.mark.redis]

TOKEN = "shutdown-test-token"
CLOSE_BOUND = 5.0  # seconds from SIGTERM until every socket has its close frame
EXIT_BOUND = 15.0  # seconds from SIGTERM until the process has exited
SOCKETS = 4


def restart_code(server: str) -> int:
    """daphne's autobahn lets applications send only 1000 and 3000-4999: the 4xxx twin there."""
    return WS_4012_SERVICE_RESTART if server == "daphne" else WS_1012_SERVICE_RESTART


def orphaned_count(server: Any) -> float:
    request = urllib.request.Request(
        f"{server.http_url}/chat_ws/metrics/", headers={"Authorization": f"Bearer {TOKEN}"}
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        text = response.read().decode()
    for line in text.splitlines():
        if line.startswith('chat_ws_questions_total{outcome="orphaned"}'):
            return float(line.split()[-1])
    return 0.0


def pending_p_keys(server: Any) -> list[str]:
    out = server.manage(
        "shell", "-c", "from chat_ws.api import pending_sync; print(' '.join(q.p_key for q in pending_sync()))"
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.strip().splitlines()
    return lines[-1].split() if lines else []  # the last line: the shell prints notes before it


async def exited(proc: subprocess.Popen[bytes], timeout: float) -> int:
    return await asyncio.to_thread(proc.wait, timeout)


async def test_sigterm_closes_sockets_with_the_restart_code_and_hands_questions_over(
    live_servers: Any, asgi_server: str
) -> None:
    first = live_servers(redis=True, CHAT_WS_HEALTH_TOKEN=TOKEN, LOG_LEVEL="INFO")
    second = live_servers(redis=True, CHAT_WS_HEALTH_TOKEN=TOKEN)
    clients = [await WsClient(first.ws_url).connect() for _ in range(SOCKETS)]
    asked = clients[0]
    await asked.send({"dispatch-key": "start-conversation"})
    question = await asked.next_question()  # its asker is the interview task in the first process
    assert question["text"] == QUESTIONS[0][1]
    p_key = str(question["p-key"])

    assert first.proc is not None
    began = time.monotonic()
    first.proc.send_signal(signal.SIGTERM)  # this process only, by its pid
    codes = await asyncio.gather(*(client.closed(timeout=CLOSE_BOUND) for client in clients))
    assert codes == [restart_code(asgi_server)] * SOCKETS, first.log()[-3000:]
    assert time.monotonic() - began < CLOSE_BOUND

    # Refused once stopping: the handshake (403) while the process drains, the TCP connect after.
    with pytest.raises((websockets.InvalidStatus, websockets.InvalidHandshake, OSError)):
        await WsClient(first.ws_url).connect()

    await exited(first.proc, EXIT_BOUND)
    assert time.monotonic() - began < EXIT_BOUND
    log = first.log()
    assert "Traceback" not in log and "never retrieved" not in log, log[-3000:]
    assert f"closed {SOCKETS} socket(s) with 1012/4012;" in log, log[-3000:]  # chat_ws's step ran

    # The question is still pending, and the client's reconnect to another process gets it again.
    assert await asyncio.to_thread(pending_p_keys, second) == [p_key]
    moved = await WsClient(second.ws_url, asked.client_id).connect()
    again = await moved.next_question()
    assert str(again["p-key"]) == p_key and again["text"] == question["text"]

    # Its asker died with the first process: the answer goes to answer_orphaned, where the demo
    # records it and continues the interview from the second process.
    await moved.answer("Bicycles, three kinds.")
    cleared = await moved.recv_until("clear-promise-keys")
    assert [str(k) for k in cleared["promise-keys"]] == [p_key]
    assert (await moved.next_question(timeout=10))["text"] == QUESTIONS[1][1]
    assert await asyncio.to_thread(orphaned_count, second) == 1.0
    await moved.close()
    for client in clients[1:]:
        await client.close()
