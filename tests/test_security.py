"""Client-id binding and the per-user connection limit, at the consumer."""

from __future__ import annotations

from types import SimpleNamespace
from typing import Any

import pytest

from chat_ws.exceptions import WS_4003_CLIENT_ID_BOUND, WS_4004_TOO_MANY_CONNECTIONS
from chat_ws.security import ANONYMOUS, owner_of
from tests.comm import Comm
from tests.conftest import chat_ws_settings

pytestmark = pytest.mark.django_db(transaction=True)


async def user(name: str) -> Any:
    from django.contrib.auth import get_user_model

    found, _ = await get_user_model().objects.aget_or_create(username=name)
    return found


def session(key: str | None) -> Any:
    return SimpleNamespace(session_key=key)


def test_owner_prefers_user_then_session() -> None:
    assert owner_of({"user": SimpleNamespace(pk=7, is_authenticated=True), "session": session("abc")}) == "user:7"
    assert owner_of({"user": SimpleNamespace(is_authenticated=False), "session": session("abc")}) == "session:abc"
    assert owner_of({"session": session(None)}) == ANONYMOUS
    assert owner_of({}) == ANONYMOUS


async def test_client_id_is_bound_to_its_first_session(backend: str) -> None:
    owner = await Comm("bound-1", scope={"session": session("s-owner")}).connect()
    await owner.disconnect()
    intruder = Comm("bound-1", scope={"session": session("s-intruder")})
    assert await intruder.try_connect() == (False, WS_4003_CLIENT_ID_BOUND)
    anonymous = Comm("bound-1")
    assert await anonymous.try_connect() == (False, WS_4003_CLIENT_ID_BOUND)
    again = await Comm("bound-1", scope={"session": session("s-owner")}).connect()
    await again.send({"dispatch-key": "ping"})
    assert (await again.recv())["dispatch-key"] == "ping-confirm"
    await again.disconnect()


async def test_intruder_does_not_displace_the_owner(backend: str) -> None:
    owner = await Comm("bound-2", scope={"user": await user("u1")}).connect()
    intruder = Comm("bound-2", scope={"user": await user("u2")})
    assert (await intruder.try_connect())[1] == WS_4003_CLIENT_ID_BOUND
    await owner.send({"dispatch-key": "ping"})
    assert (await owner.recv())["dispatch-key"] == "ping-confirm"
    await owner.disconnect()


async def test_binding_can_be_switched_off(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, BIND_CLIENT_ID=False)
    first = await Comm("free-1", scope={"session": session("a")}).connect()
    await first.disconnect()
    second = await Comm("free-1", scope={"session": session("b")}).connect()
    await second.disconnect()


async def test_connections_per_user(settings: Any, backend: str) -> None:
    chat_ws_settings(settings, MAX_CONNECTIONS_PER_USER=2)
    u5 = await user("u5")
    a = await Comm(scope={"user": u5}).connect()
    b = await Comm(scope={"user": u5}).connect()
    third = Comm(scope={"user": u5})
    assert (await third.try_connect())[1] == WS_4004_TOO_MANY_CONNECTIONS
    other_user = await Comm(scope={"user": await user("u6")}).connect()
    await a.disconnect()
    c = await Comm(scope={"user": u5}).connect()
    for comm in (b, c, other_user):
        await comm.disconnect()
