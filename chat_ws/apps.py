"""AppConfig of chat_ws."""

from __future__ import annotations

from importlib import import_module

from django.apps import AppConfig


class ChatWsConfig(AppConfig):
    """Registers the built-in handlers, the configured handler modules and the system checks."""

    name = "chat_ws"
    verbose_name = "Chat websockets"
    default_auto_field = "django.db.models.BigAutoField"

    def ready(self) -> None:
        """Called once the app registry is ready."""
        from chat_ws import checks, handlers  # noqa: F401  (registration side effects)
        from chat_ws.conf import get_settings

        for module in get_settings()["HANDLER_MODULES"]:
            import_module(module)
