"""Put questions and presence into a store the way the services do, for store-level tests."""

from __future__ import annotations

import time
from typing import Any

from chat_ws.types import Question


async def add(store: Any, question: Question, *, max_pending: int = 10) -> Question:
    """Store ``question`` as ask() does, first registering its client when it has no record."""
    if await store.connection(question.client_id) is None:
        await store.open_connection(question.client_id, "srv-seed", f"chan-{question.client_id}", time.time())
    state, stored = await store.ask_question(question, max_pending=max_pending)
    assert stored is not None, f"not stored: client state {state}"
    return stored


async def lose_presence(store: Any, client_id: str) -> None:
    """Drop the client's presence record but keep its questions, as when the record expired."""
    record = await store.connection(client_id)
    assert record is not None
    closed_at = time.time()
    assert await store.close_connection(client_id, record.channel_name, closed_at)
    assert await store.evict(client_id, closed_at=closed_at)
