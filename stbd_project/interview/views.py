"""The chat page."""

from django.http import HttpRequest, HttpResponse
from django.shortcuts import render
from django.views.decorators.csrf import ensure_csrf_cookie

from chat_ws.api import setting


@ensure_csrf_cookie
def chat_page(request: HttpRequest) -> HttpResponse:
    """The demo chat page with the browser client."""
    if not request.session.session_key:
        request.session.save()  # an anonymous session binds the client-id to this browser
    return render(request, "chat.html", {"ping_interval": setting("PING_INTERVAL")})
