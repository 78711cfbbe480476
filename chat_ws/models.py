"""ClientSession: one row per websocket connection, for history and the admin."""

from __future__ import annotations

from django.conf import settings
from django.db import models


class ClientSession(models.Model):
    """One websocket connection of one client-id."""

    client_id = models.CharField(max_length=128, db_index=True)
    channel_name = models.CharField(max_length=200)
    server_id = models.CharField(max_length=128, help_text="process that served the socket")
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL, related_name="+"
    )
    remote_addr = models.CharField(max_length=64, null=True, blank=True)
    user_agent = models.CharField(max_length=512, blank=True, default="")
    opened_at = models.DateTimeField(auto_now_add=True, db_index=True)
    closed_at = models.DateTimeField(null=True, blank=True, db_index=True)
    close_reason = models.CharField(max_length=64, blank=True, default="")
    last_seen_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        ordering = ["-opened_at"]
        indexes = [
            models.Index(fields=["client_id", "closed_at"], name="chat_ws_cs_client_open"),
            models.Index(fields=["channel_name"], name="chat_ws_cs_channel"),  # closing one connection's row
        ]

    def __str__(self) -> str:
        return f"{self.client_id} @ {self.opened_at:%Y-%m-%d %H:%M:%S}"

    @property
    def is_open(self) -> bool:
        """True while the connection has not been closed."""
        return self.closed_at is None
