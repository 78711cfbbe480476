"""Operations endpoints: the health report and Prometheus metrics."""

from __future__ import annotations

import hmac
from typing import Any

from django.http import HttpRequest, HttpResponse, JsonResponse
from django.views.decorators.cache import never_cache
from django.views.decorators.http import require_GET
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest

from chat_ws import metrics
from chat_ws.conf import get_settings
from chat_ws.health import health


def _token(request: HttpRequest) -> str | None:
    header = request.headers.get("Authorization", "")
    scheme, _, value = header.partition(" ")
    if scheme.lower() == "bearer" and value.strip():
        return value.strip()
    return request.GET.get("token") or None


async def authorized(request: HttpRequest) -> bool:
    """True for an active staff user, or a request carrying the configured HEALTH_TOKEN."""
    expected: Any = get_settings()["HEALTH_TOKEN"]
    given = _token(request)
    if expected and given and hmac.compare_digest(str(expected).encode(), given.encode()):
        return True
    user = await request.auser()
    return bool(user.is_active and user.is_staff)


@never_cache
@require_GET
async def health_view(request: HttpRequest) -> HttpResponse:
    """200 when healthy, 503 when not; the counts only for staff or with the token."""
    counts = await authorized(request)
    report = await health(counts=counts)
    return JsonResponse(report.as_dict(counts=counts), status=200 if report.healthy else 503)


@never_cache
@require_GET
async def metrics_view(request: HttpRequest) -> HttpResponse:
    """This process's metrics in the Prometheus text format; staff or the token only."""
    if not await authorized(request):
        return HttpResponse("staff or the health token required\n", status=403, content_type="text/plain")
    return HttpResponse(generate_latest(metrics.REGISTRY), content_type=CONTENT_TYPE_LATEST)
