"""Who may use a client-id, and how many sockets one user may hold."""

from __future__ import annotations

import logging
import time
from typing import Any

from chat_ws.conf import get_settings
from chat_ws.exceptions import WS_4003_CLIENT_ID_BOUND, WS_4004_TOO_MANY_CONNECTIONS
from chat_ws.store import get_store

logger = logging.getLogger(__name__)

ANONYMOUS = "anonymous"  # owner of client-ids first used with neither a user nor a session
SOCKET_MAX_AGE = 24 * 3600  # seconds a counted socket stays counted without a release (daphne's limit)


def binding_name(client_id: str) -> str:
    """The store claim that binds a client-id to its owner (released when the client is forgotten)."""
    return f"bind:{client_id}"


def owner_of(scope: dict[str, Any]) -> str:
    """The identity a client-id is bound to: the user, else the session, else anonymous."""
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    session = scope.get("session")
    key = getattr(session, "session_key", None) if session is not None else None
    return f"session:{key}" if key else ANONYMOUS


def _user_key(scope: dict[str, Any]) -> str | None:
    user = scope.get("user")
    if user is not None and getattr(user, "is_authenticated", False):
        return f"user:{user.pk}"
    return None


async def admit(scope: dict[str, Any], client_id: str, channel_name: str) -> int | None:
    """None when the connection may use client_id; otherwise the close code that refuses it."""
    conf = get_settings()
    store = get_store()
    if conf["BIND_CLIENT_ID"]:
        owner = owner_of(scope)
        holder = await store.claim(binding_name(client_id), owner, conf["BINDING_TTL"], client_id=client_id)
        if holder != owner:
            logger.warning("refused client-id %s: bound to another %s", client_id, holder.split(":")[0])
            return WS_4003_CLIENT_ID_BOUND
    limit = conf["MAX_CONNECTIONS_PER_USER"]
    user_key = _user_key(scope)
    if limit and user_key:
        admitted = await store.admit_socket(
            user_key, channel_name, limit=int(limit), now=time.time(), max_age=SOCKET_MAX_AGE
        )
        if not admitted:
            logger.warning("refused a socket of %s: %d already open", user_key, limit)
            return WS_4004_TOO_MANY_CONNECTIONS
    return None


async def release(scope: dict[str, Any], channel_name: str) -> None:
    """Stop counting a closed socket against its user."""
    user_key = _user_key(scope)
    if user_key and get_settings()["MAX_CONNECTIONS_PER_USER"]:
        await get_store().release_socket(user_key, channel_name)
