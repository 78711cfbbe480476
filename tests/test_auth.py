"""chat_ws.auth: the websocket gets what channels' AuthMiddlewareStack gives it, for less."""

from __future__ import annotations

from typing import Any

import pytest
from asgiref.sync import sync_to_async
from channels.auth import AuthMiddlewareStack

from chat_ws import auth
from chat_ws.auth import ChatAuthMiddlewareStack

pytestmark = pytest.mark.django_db(transaction=True)


class Seen:
    """An inner ASGI app that records the scope and the send it was given."""

    def __init__(self) -> None:
        self.scope: dict[str, Any] = {}
        self.send: Any = None

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        self.scope, self.send = scope, send


async def server_send(message: dict[str, Any]) -> None:
    """The server's own send."""


async def receive() -> dict[str, Any]:
    return {"type": "websocket.connect"}


def websocket_scope(cookie: str | None = None) -> dict[str, Any]:
    headers = [(b"host", b"testserver"), (b"origin", b"http://testserver")]
    if cookie is not None:
        headers.append((b"cookie", cookie.encode("latin1")))
    return {"type": "websocket", "path": "/ws", "headers": headers, "query_string": b""}


async def through(stack: Any, scope: dict[str, Any]) -> Seen:
    seen = Seen()
    await stack(seen)(scope, receive, server_send)
    return seen


@sync_to_async
def logged_in_cookie(username: str) -> tuple[str, Any]:
    """A session cookie of a logged-in user, made the way Django's login view makes it."""
    from django.contrib.auth import get_user_model
    from django.test import Client

    user = get_user_model().objects.create_user(username=username, password="pw-123456")
    client = Client()
    client.force_login(user)
    return f"sessionid={client.cookies['sessionid'].value}", user


async def test_anonymous_handshake_needs_no_database_trip(monkeypatch: pytest.MonkeyPatch) -> None:
    async def no_lookup(scope: dict[str, Any]) -> Any:
        raise AssertionError("a handshake without a session cookie looked the user up")

    monkeypatch.setattr(auth, "get_user", no_lookup)
    seen = await through(ChatAuthMiddlewareStack, websocket_scope())
    assert seen.scope["user"].is_anonymous
    assert seen.scope["session"].session_key is None
    assert seen.scope["cookies"] == {}
    assert seen.send is server_send  # frames go straight to the server


async def test_logged_in_user_is_found_as_channels_finds_it() -> None:
    cookie, user = await logged_in_cookie("alice")
    ours = await through(ChatAuthMiddlewareStack, websocket_scope(f"theme=dark; {cookie}"))
    theirs = await through(AuthMiddlewareStack, websocket_scope(f"theme=dark; {cookie}"))
    assert ours.scope["user"].pk == user.pk == theirs.scope["user"].pk
    assert ours.scope["session"].session_key == theirs.scope["session"].session_key
    assert ours.scope["cookies"] == theirs.scope["cookies"] == {"theme": "dark", "sessionid": cookie.split("=", 1)[1]}
    assert ours.send is server_send


async def test_unknown_or_anonymous_session_is_anonymous_as_in_channels() -> None:
    for cookie in ("sessionid=no-such-session-key-000", "sessionid="):
        ours = await through(ChatAuthMiddlewareStack, websocket_scope(cookie))
        theirs = await through(AuthMiddlewareStack, websocket_scope(cookie))
        assert ours.scope["user"].is_anonymous and theirs.scope["user"].is_anonymous
        assert ours.scope["session"].session_key == theirs.scope["session"].session_key


async def test_http_goes_through_channels_stack() -> None:
    scope = {"type": "http", "path": "/", "headers": [], "query_string": b"", "method": "GET"}
    seen = await through(ChatAuthMiddlewareStack, scope)
    assert seen.scope["user"].is_anonymous
    assert seen.send is not server_send  # channels' session wrapper saves sessions on responses


async def test_scope_given_by_an_outer_middleware_is_kept() -> None:
    scope = websocket_scope() | {"user": "outer-user", "session": "outer-session", "cookies": {"a": "b"}}
    seen = await through(ChatAuthMiddlewareStack, scope)
    assert (seen.scope["user"], seen.scope["session"], seen.scope["cookies"]) == ("outer-user", "outer-session", {"a": "b"})
