"""ClientSession rows: one per connection, for history and the admin."""

from __future__ import annotations

import logging
from typing import Any

from channels.db import database_sync_to_async
from django.utils import timezone

logger = logging.getLogger(__name__)

REASON_MAX = 64


def _header(scope: dict[str, Any], name: bytes) -> str:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")[:512]
    return ""


@database_sync_to_async
def open_session(client_id: str, channel_name: str, server_id: str, scope: dict[str, Any]) -> int:
    """Insert the row of a new connection and return its id."""
    from chat_ws.models import ClientSession

    user = scope.get("user")
    client = scope.get("client") or ("", 0)
    row = ClientSession.objects.create(
        client_id=client_id,
        channel_name=channel_name,
        server_id=server_id,
        user=user if getattr(user, "is_authenticated", False) else None,
        remote_addr=str(client[0] or "")[:64] or None,
        user_agent=_header(scope, b"user-agent"),
        last_seen_at=timezone.now(),
    )
    return row.pk


@database_sync_to_async
def close_session(session_id: int, reason: str) -> None:
    """Close one connection's row with a reason, if it is still open."""
    from chat_ws.models import ClientSession

    ClientSession.objects.filter(pk=session_id, closed_at__isnull=True).update(
        closed_at=timezone.now(), close_reason=reason[:REASON_MAX]
    )


@database_sync_to_async
def close_client_sessions(client_id: str, reason: str) -> int:
    """Close every open row of a client-id; return how many were open."""
    from chat_ws.models import ClientSession

    return ClientSession.objects.filter(client_id=client_id, closed_at__isnull=True).update(
        closed_at=timezone.now(), close_reason=reason[:REASON_MAX]
    )
