"""Read-only admin of connection history."""

from __future__ import annotations

from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from chat_ws.models import ClientSession


@admin.register(ClientSession)
class ClientSessionAdmin(admin.ModelAdmin):
    """Connections, newest first; nothing is editable."""

    list_display = ("client_id", "user", "opened_at", "last_seen_at", "closed_at", "close_reason", "open")
    list_filter = ("close_reason", "server_id", "opened_at")
    search_fields = ("client_id",)
    date_hierarchy = "opened_at"
    readonly_fields = [f.name for f in ClientSession._meta.fields]

    @admin.display(boolean=True, description="open?")
    def open(self, obj: ClientSession) -> bool:
        return obj.is_open

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
