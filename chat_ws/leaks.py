"""What the server still holds for clients whose id starts with a prefix (load-test leak checks).

A load test gives its clients ids with a unique prefix and closes them with ``close-channel``;
afterwards every count here must be 0.
"""

from __future__ import annotations

from channels.db import database_sync_to_async

from chat_ws import delivery, sessions
from chat_ws.store import get_store


@database_sync_to_async
def _open_sessions(prefix: str) -> int:
    from chat_ws.models import ClientSession

    return ClientSession.objects.filter(client_id__startswith=prefix, closed_at__isnull=True).count()


async def leak_report(prefix: str) -> dict[str, int]:
    """Counts of what is left of the clients whose client-id starts with ``prefix``.

    ``clients``: presence records of connected clients; ``ping_records``: every presence record,
    connected or within its reconnect grace; ``questions``: their pending questions;
    ``open_sessions``: their ClientSession rows not closed; ``local_sockets``: their sockets
    registered in the process that answers (consumers not released).
    """
    await sessions.flush()
    store = get_store()
    records = [c for c in await store.connections() if c.client_id.startswith(prefix)]
    questions = [q for q in await store.pending() if q.client_id.startswith(prefix)]
    return {
        "clients": sum(1 for c in records if c.is_open),
        "questions": len(questions),
        "ping_records": len(records),
        "open_sessions": await _open_sessions(prefix),
        "local_sockets": sum(1 for e in delivery.endpoints() if e.client_id.startswith(prefix)),
    }
