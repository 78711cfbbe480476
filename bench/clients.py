"""Minimal wire clients for the benchmark: chat_ws (EDN or JSON) and socket.io (engine.io v4).

Both do the least a client can do per question (find the key, answer at once) so that the load
generator costs about the same for every server it drives.
"""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass, field
from typing import Any

import websockets

OPEN_TIMEOUT = 60.0  # seconds a handshake may take
WAIT = 60.0  # seconds to wait for the next expected frame

EDN_P_KEY = re.compile(r":p-key :(promise-[0-9a-f]+)")
JSON_P_KEY = re.compile(r'"p-key":\s*"(promise-[0-9a-f]+)"')
EDN_FIGURE = re.compile(r":(p50|p99)-ms ([0-9.]+)")
JSON_FIGURE = re.compile(r'"(p50|p99)-ms":\s*([0-9.]+)')
EDN_ANSWER = '{:dispatch-key :domain-expert-says, :msg-text "ok", :promise-keys #{:%s}}'
JSON_ANSWER = '{"dispatch-key": "domain-expert-says", "msg-text": "ok", "promise-keys": ["%s"]}'


@dataclass
class Target:
    """One server under test, as the clients see it."""

    name: str
    kind: str  # "chat" or "sio"
    url: str  # ws://host:port/ws for chat, ws://host:port for socket.io
    codec: str = "edn"

    @property
    def origin(self) -> str:
        host = self.url.split("://", 1)[1].split("/", 1)[0]
        return f"http://{host}"


@dataclass
class Conversation:
    """What one client measured in one load-test conversation."""

    cycles: list[float] = field(default_factory=list)  # ms between successive questions
    server: dict[str, float] = field(default_factory=dict)  # the server's own p50/p99 of ask()
    answered: int = 0


def _connect_kwargs(target: Target) -> dict[str, Any]:
    return {
        "origin": target.origin,
        "compression": None,
        "ping_interval": None,
        "open_timeout": OPEN_TIMEOUT,
        "close_timeout": 10,
        "max_size": 1 << 20,
    }


async def open_socket(target: Target, client_id: str) -> Any:
    """Open a connection ready for questions (socket.io: after its namespace handshake)."""
    if target.kind == "chat":
        return await websockets.connect(
            f"{target.url}?client-id={client_id}",
            subprotocols=["chat_ws.json"] if target.codec == "json" else None,
            **_connect_kwargs(target),
        )
    ws = await websockets.connect(f"{target.url}/socket.io/?EIO=4&transport=websocket", **_connect_kwargs(target))
    opened = await asyncio.wait_for(ws.recv(), WAIT)
    if not str(opened).startswith("0"):
        raise RuntimeError(f"unexpected engine.io open packet {opened!r}")
    await ws.send("40")
    while True:
        packet = str(await asyncio.wait_for(ws.recv(), WAIT))
        if packet.startswith("40"):
            return ws
        if packet == "2":
            await ws.send("3")


async def converse(target: Target, ws: Any, questions: int) -> Conversation:
    """Run one load-test conversation of ``questions`` questions, answering each at once."""
    if target.kind == "chat":
        return await _converse_chat(target, ws, questions)
    return await _converse_sio(ws, questions)


async def _converse_chat(target: Target, ws: Any, questions: int) -> Conversation:
    json_codec = target.codec == "json"
    p_key = JSON_P_KEY if json_codec else EDN_P_KEY
    answer = JSON_ANSWER if json_codec else EDN_ANSWER
    figure = JSON_FIGURE if json_codec else EDN_FIGURE
    result = Conversation()
    if json_codec:
        start = '{"dispatch-key": "start-conversation", "conversation-id": "loadtest", "questions": %d}'
    else:
        start = "{:dispatch-key :start-conversation, :conversation-id :loadtest, :questions %d}"
    last = time.perf_counter()
    await ws.send(start % questions)
    while True:
        text = await asyncio.wait_for(ws.recv(), WAIT)
        found = p_key.search(text)
        if found:
            now = time.perf_counter()
            result.cycles.append((now - last) * 1000)
            last = now
            await ws.send(answer % found.group(1))
            result.answered += 1
        elif "loadtest-done" in text:
            result.server = {name: float(value) for name, value in figure.findall(text)}
            return result
        elif "error" in text and "clear-promise-keys" not in text:
            raise RuntimeError(f"server error: {text[:200]}")


async def _converse_sio(ws: Any, questions: int) -> Conversation:
    result = Conversation()
    last = time.perf_counter()
    await ws.send('42["start",{"questions":%d}]' % questions)
    while True:
        packet = str(await asyncio.wait_for(ws.recv(), WAIT))
        if packet.startswith("42"):
            bracket = packet.index("[")
            ack = packet[2:bracket]
            if ack:  # an ask: acknowledge with the answer
                now = time.perf_counter()
                result.cycles.append((now - last) * 1000)
                last = now
                await ws.send(f'43{ack}["ok"]')
                result.answered += 1
            elif packet.startswith('42["done"'):
                result.server = {name: float(value) for name, value in JSON_FIGURE.findall(packet)}
                return result
        elif packet == "2":
            await ws.send("3")


async def close_socket(target: Target, ws: Any) -> None:
    """Leave: chat_ws clients say close-channel so that the server forgets them at once."""
    try:
        if target.kind == "chat":
            await ws.send('{"dispatch-key": "close-channel"}' if target.codec == "json" else "{:dispatch-key :close-channel}")
            await asyncio.wait_for(ws.wait_closed(), WAIT)
        else:
            await ws.send("41")
            await ws.close()
    except Exception:  # a socket the server already dropped
        ws.transport.abort()


async def keep_alive(ws: Any) -> None:
    """Answer engine.io pings of an idle socket.io connection until it closes."""
    try:
        async for packet in ws:
            if packet == "2":
                await ws.send("3")
    except websockets.ConnectionClosed:
        pass
