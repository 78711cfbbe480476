"""The demo's load-test support: the leak report (/demo/leaks?client_prefix=P) and STBD_LOADTEST."""

from __future__ import annotations

from typing import Any

import pytest
from django.contrib.auth import get_user_model

from tests.comm import Comm
from tests.conftest import chat_ws_settings

pytestmark = pytest.mark.django_db(transaction=True)

LEAKS = "/demo/leaks"
TOKEN = "leak-token"
PREFIX = "leaktest-run1-"
ZERO = {"clients": 0, "questions": 0, "ping_records": 0, "open_sessions": 0, "local_sockets": 0}


def test_needs_staff_or_the_health_token(settings: Any, client: Any) -> None:
    assert client.get(LEAKS, {"client_prefix": PREFIX}).status_code == 403
    client.force_login(get_user_model().objects.create_user("someone", password="pw"))
    assert client.get(LEAKS, {"client_prefix": PREFIX}).status_code == 403
    chat_ws_settings(settings, HEALTH_TOKEN=TOKEN)
    response = client.get(LEAKS, {"client_prefix": PREFIX}, HTTP_AUTHORIZATION=f"Bearer {TOKEN}")
    assert response.status_code == 200
    assert response.json() == {"client_prefix": PREFIX, "leaks": ZERO}


def test_a_short_or_missing_prefix_is_refused(client: Any) -> None:
    client.force_login(get_user_model().objects.create_user("op", password="pw", is_staff=True))
    assert client.get(LEAKS, {"client_prefix": "short"}).status_code == 400
    assert client.get(LEAKS).status_code == 400


def test_health_no_longer_reports_leaks(client: Any) -> None:
    client.force_login(get_user_model().objects.create_user("op", password="pw", is_staff=True))
    assert "leaks" not in client.get("/chat_ws/health/", {"client_prefix": PREFIX}).json()


async def test_counts_what_the_server_holds_for_the_prefix(settings: Any, async_client: Any, backend: str) -> None:
    chat_ws_settings(settings, HEALTH_TOKEN=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    mine = await Comm(PREFIX + "1").connect()
    other = await Comm("someone-else-1").connect()
    await mine.send({"dispatch-key": "ping", "ping-id": 1})
    await mine.recv()  # ping-confirm: registered
    await other.send({"dispatch-key": "ping", "ping-id": 1})
    await other.recv()
    body = (await async_client.get(LEAKS, {"client_prefix": PREFIX}, headers=auth)).json()
    assert body["leaks"] == {**ZERO, "clients": 1, "ping_records": 1, "open_sessions": 1, "local_sockets": 1}
    await mine.send({"dispatch-key": "close-channel"})
    await mine.comm.receive_output(5)  # the server's close (4002): it forgot the client
    body = (await async_client.get(LEAKS, {"client_prefix": PREFIX}, headers=auth)).json()
    assert body["leaks"] == ZERO
    await other.disconnect()


# ---------------------------------------------------------------------- the demo's own switch
@pytest.mark.parametrize("enabled", [True, False])
async def test_the_loadtest_conversation_follows_stbd_loadtest(settings: Any, backend: str, enabled: bool) -> None:
    settings.STBD_LOADTEST = enabled
    client = await Comm(PREFIX + "2").connect()
    await client.send({"dispatch-key": "start-conversation", "conversation-id": "loadtest", "questions": 1})
    reply = await client.recv()
    if enabled:
        assert reply.get("p-key"), reply  # the first question
    else:
        assert reply["dispatch-key"] == "error" and "disabled" in reply["description"], reply
    await client.disconnect()
