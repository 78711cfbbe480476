"""Session and user for the websocket, as channels' ``AuthMiddlewareStack`` gives them, for less.

``ChatAuthMiddlewareStack(inner)`` puts ``scope["cookies"]``, ``scope["session"]`` and
``scope["user"]`` in a websocket scope the way channels' stack does, with two differences that
matter at scale:

- A handshake that carries no session cookie gets ``AnonymousUser`` at once. channels resolves
  the user through a database thread on every handshake, even when there is nothing to look up.
  With a cookie, the user is resolved by channels' own ``get_user``, through the database
  thread, as before.
- The socket's ``send`` is not wrapped. channels' session wrapper checks the session on every
  frame sent, but saves it only for ``http.response.start``, which a websocket never sends; a
  websocket consumer that changes the session saves it itself (``await session.asave()``), under
  either stack.

Other scope types (HTTP) go through channels' ``AuthMiddlewareStack`` unchanged.
"""

from __future__ import annotations

from importlib import import_module
from typing import Any

from channels.auth import AuthMiddlewareStack, get_user
from django.conf import settings
from django.contrib.auth.models import AnonymousUser
from django.http.cookie import parse_cookie


class ChatAuthMiddleware:
    """Cookies, session and user for websocket scopes (see the module docstring)."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner
        self.http = AuthMiddlewareStack(inner)
        self.session_store = import_module(settings.SESSION_ENGINE).SessionStore

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> Any:
        if scope["type"] != "websocket":
            return await self.http(scope, receive, send)
        scope = dict(scope)
        cookies = scope.get("cookies")
        if cookies is None:
            cookies = scope["cookies"] = _cookies(scope)
        session_key = cookies.get(settings.SESSION_COOKIE_NAME)
        if "session" not in scope:
            scope["session"] = self.session_store(session_key)
        if "user" not in scope:
            scope["user"] = await get_user(scope) if session_key else AnonymousUser()
        return await self.inner(scope, receive, send)


def _cookies(scope: dict[str, Any]) -> dict[str, str]:
    for name, value in scope.get("headers") or ():
        if name == b"cookie":
            return parse_cookie(value.decode("latin1"))
    return {}


def ChatAuthMiddlewareStack(inner: Any) -> ChatAuthMiddleware:  # noqa: N802  (named like channels' stack)
    """Drop-in for ``channels.auth.AuthMiddlewareStack`` around chat_ws's websocket route."""
    return ChatAuthMiddleware(inner)
