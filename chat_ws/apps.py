"""AppConfig of chat_ws."""

from __future__ import annotations

import logging
from importlib import import_module

from django.apps import AppConfig

logger = logging.getLogger(__name__)


def module_missing(name: str, exc: BaseException) -> bool:
    """Whether ``exc`` says that module ``name`` itself (or a parent package) does not exist."""
    missing = getattr(exc, "name", None)
    return isinstance(exc, ModuleNotFoundError) and bool(missing) and (
        name == missing or name.startswith(f"{missing}.")
    )


class ChatWsConfig(AppConfig):
    """Registers the built-in handlers, the configured handler modules and the system checks."""

    name = "chat_ws"
    verbose_name = "Chat websockets"
    default_auto_field = "django.db.models.BigAutoField"

    def __init__(self, app_name: str, app_module: object) -> None:
        super().__init__(app_name, app_module)
        self.handler_module_errors: dict[str, BaseException] = {}  # reported by chat_ws.E008

    def ready(self) -> None:
        """Called once the app registry is ready."""
        from chat_ws import checks, handlers  # noqa: F401  (registration side effects)
        from chat_ws.conf import get_settings

        modules = get_settings()["HANDLER_MODULES"]
        if isinstance(modules, (list, tuple)):  # anything else is reported by chat_ws.E008
            for module in modules:
                if isinstance(module, str):
                    self.import_handler_module(module)

    def import_handler_module(self, name: str) -> BaseException | None:
        """Import one of ``HANDLER_MODULES``; return (and remember) why it failed, or None.

        A failure does not stop start-up with a traceback: the system check chat_ws.E008 reports
        it, and the log keeps the traceback of an error raised inside the module.
        """
        if name in self.handler_module_errors:
            return self.handler_module_errors[name]
        try:
            import_module(name)
        except Exception as exc:
            self.handler_module_errors[name] = exc
            if module_missing(name, exc):
                logger.error("Handler module %s does not exist: %s", name, exc)
            else:
                logger.error("Handler module %s failed to import", name, exc_info=exc)
            return exc
        return None
