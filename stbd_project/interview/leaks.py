"""The demo's leak report: what the server still holds for clients whose id starts with a prefix.

A load test (``python -m loadtest``) gives its clients ids with a unique prefix and closes them
with ``close-channel``; afterwards every count here must be 0. ``GET /demo/leaks?client_prefix=P``
answers staff and requests carrying the CHAT_WS ``HEALTH_TOKEN``, as the health endpoint does.
"""

from __future__ import annotations

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET

from chat_ws import api

MIN_PREFIX = 8  # characters of client_prefix; a short prefix could match real clients


async def leftovers(prefix: str) -> dict[str, int]:
    """Counts of what is left of the clients whose client-id starts with ``prefix``.

    ``clients``: presence records of connected clients; ``ping_records``: every presence record,
    connected or within its reconnect grace; ``questions``: their pending questions;
    ``open_sessions``: their ClientSession rows not closed; ``local_sockets``: their sockets
    registered in the process that answers (consumers not released).
    """
    records = await api.connections(prefix)
    questions = [q for q in await api.pending() if q.client_id.startswith(prefix)]
    return {
        "clients": sum(1 for c in records if c.is_open),
        "questions": len(questions),
        "ping_records": len(records),
        "open_sessions": await api.open_sessions(prefix),
        "local_sockets": sum(1 for c in api.local_client_ids() if c.startswith(prefix)),
    }


@never_cache
@require_GET
async def leaks_view(request: HttpRequest) -> HttpResponse:
    """The leak report of ``?client_prefix=P`` as JSON; staff or the health token only."""
    if not await api.is_operator(request):
        return JsonResponse({"error": "staff or the health token required"}, status=403)
    prefix = request.GET.get("client_prefix", "")
    if len(prefix) < MIN_PREFIX:
        return JsonResponse({"error": f"client_prefix must have at least {MIN_PREFIX} characters"}, status=400)
    return JsonResponse({"client_prefix": prefix, "leaks": await leftovers(prefix)})
