"""Origin checks and client-id binding on the demo site, over real TCP with real cookies."""

from __future__ import annotations

import asyncio
import urllib.request
import uuid
from typing import Any

import pytest
import websockets

from chat_ws.exceptions import WS_4003_CLIENT_ID_BOUND

pytestmark = pytest.mark.integration


def session_cookie(server: Any) -> str:
    """Open the chat page like a browser and return its session cookie."""
    with urllib.request.urlopen(server.http_url + "/", timeout=10) as response:
        cookies = response.headers.get_all("Set-Cookie") or []
    for cookie in cookies:
        if cookie.startswith("sessionid="):
            return cookie.split(";", 1)[0]
    raise AssertionError(f"the chat page set no session cookie: {cookies}")


async def connect(server: Any, client_id: str, cookie: str | None = None, origin: str | None = None) -> Any:
    headers = {"Cookie": cookie} if cookie else {}
    return await websockets.connect(
        f"{server.ws_url}?client-id={client_id}",
        origin=origin or server.http_url,
        additional_headers=headers,
        open_timeout=5,
    )


@pytest.fixture(params=["memory", "redis"])
def server(request: pytest.FixtureRequest, live_servers: Any) -> Any:
    return live_servers(redis=request.param == "redis")


async def test_foreign_origin_is_refused(server: Any) -> None:
    for origin in ("http://evil.example", "null", f"http://127.0.0.1.evil.example:{server.port}"):
        with pytest.raises(websockets.InvalidStatus) as info:
            await connect(server, str(uuid.uuid4()), origin=origin)
        assert info.value.response.status_code == 403
    ws = await connect(server, str(uuid.uuid4()))
    await ws.close()


async def test_client_id_cannot_be_taken_over_from_another_session(server: Any) -> None:
    owner_cookie = await asyncio.to_thread(session_cookie, server)
    thief_cookie = await asyncio.to_thread(session_cookie, server)
    assert owner_cookie != thief_cookie
    client_id = str(uuid.uuid4())
    owner = await connect(server, client_id, owner_cookie)
    for cookie in (thief_cookie, None):
        thief = await connect(server, client_id, cookie)
        with pytest.raises(websockets.ConnectionClosed) as info:
            await asyncio.wait_for(thief.recv(), 5)
        assert info.value.rcvd is not None and info.value.rcvd.code == WS_4003_CLIENT_ID_BOUND
    await owner.send('{:dispatch-key :ping, :ping-id 1}')
    assert "ping-confirm" in await asyncio.wait_for(owner.recv(), 5)
    await owner.close()
    again = await connect(server, client_id, owner_cookie)  # the owner's reload keeps its id
    await again.send('{:dispatch-key :ping, :ping-id 2}')
    assert "ping-confirm" in await asyncio.wait_for(again.recv(), 5)
    await again.close()
