"""The handler registry and how handlers run."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from chat_ws.dispatch import handler, registered, unregister
from tests.comm import Comm

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def keys() -> Iterator[list[str]]:
    made: list[str] = []
    yield made
    for key in made:
        unregister(key)


def test_duplicate_registration_is_refused(keys: list[str]) -> None:
    keys.append("test-dup")

    @handler("test-dup")
    async def first(ctx: Any, message: Any) -> None: ...

    with pytest.raises(ValueError):

        @handler("test-dup")
        async def second(ctx: Any, message: Any) -> None: ...

    @handler("test-dup", replace=True)
    async def third(ctx: Any, message: Any) -> None: ...

    assert registered()["test-dup"].func is third


def test_invalid_key_is_refused() -> None:
    from chat_ws.exceptions import InvalidMessage

    with pytest.raises(InvalidMessage):
        handler("not a key")


def test_builtins_are_registered() -> None:
    assert {"ping", "alive-confirm", "domain-expert-says", "close-channel"} <= set(registered())
    assert {"start-conversation", "resume-conversation"} <= set(registered())


async def test_return_value_is_sent_and_none_sends_nothing(keys: list[str], backend: str) -> None:
    keys += ["test-echo", "test-quiet"]

    @handler("test-echo")
    async def echo(ctx: Any, message: Any) -> Any:
        return {"dispatch-key": "test-echoed", "text": message["text"]}

    @handler("test-quiet")
    async def quiet(ctx: Any, message: Any) -> None:
        return None

    comm = await Comm().connect()
    await comm.send({"dispatch-key": "test-quiet"})
    await comm.send({"dispatch-key": "test-echo", "text": "hi"})
    reply = await comm.recv()
    assert reply["dispatch-key"] == "test-echoed" and reply["text"] == "hi"
    assert await comm.nothing()
    await comm.disconnect()


async def test_sync_handler_runs_in_a_thread(keys: list[str], backend: str) -> None:
    import threading

    keys.append("test-sync")
    main = threading.get_ident()

    @handler("test-sync")
    def sync(ctx: Any, message: Any) -> Any:
        return {"dispatch-key": "test-thread", "other-thread": threading.get_ident() != main}

    comm = await Comm().connect()
    await comm.send({"dispatch-key": "test-sync"})
    assert (await comm.recv())["other-thread"] is True
    await comm.disconnect()


async def test_a_waiting_handler_does_not_block_the_socket(keys: list[str], backend: str) -> None:
    keys.append("test-wait")
    release = asyncio.Event()

    @handler("test-wait")
    async def wait(ctx: Any, message: Any) -> Any:
        await release.wait()
        return {"dispatch-key": "test-released"}

    comm = await Comm().connect()
    await comm.send({"dispatch-key": "test-wait"})
    await comm.send({"dispatch-key": "ping"})
    assert (await comm.recv())["dispatch-key"] == "ping-confirm"
    release.set()
    assert (await comm.recv())["dispatch-key"] == "test-released"
    await comm.disconnect()


async def test_failing_handler_gets_an_error_reply(keys: list[str], backend: str, caplog: Any) -> None:
    keys.append("test-boom")

    @handler("test-boom")
    async def boom(ctx: Any, message: Any) -> None:
        raise RuntimeError("secret answer text must not leak")

    comm = await Comm().connect()
    await comm.send({"dispatch-key": "test-boom"})
    reply = await comm.recv()
    assert reply["error"] == "handler-failed" and reply["in-reply-to"] == "test-boom"
    assert "secret" not in reply["description"]
    assert any("test-boom" in r.getMessage() for r in caplog.records)
    await comm.send({"dispatch-key": "ping"})
    assert (await comm.recv())["dispatch-key"] == "ping-confirm"
    await comm.disconnect()
