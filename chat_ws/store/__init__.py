"""Store backends for questions and presence, and the accessor that picks one."""

from __future__ import annotations

from typing import Any

from django.core.signals import setting_changed
from django.dispatch import receiver
from django.utils.module_loading import import_string

from chat_ws.conf import get_settings
from chat_ws.store.base import BaseStore, Connection

__all__ = ["BaseStore", "Connection", "get_store", "set_store", "reset_store"]

_store: BaseStore | None = None


def get_store() -> BaseStore:
    """Return the process's store, built from the ``STORE`` setting on first use."""
    global _store
    if _store is None:
        conf = get_settings()
        cls = import_string(conf["STORE"])
        _store = cls(conf)
    return _store


def set_store(store: BaseStore | None) -> None:
    """Replace the process's store (a test hook); None rebuilds it from settings on next use."""
    global _store
    _store = store


def reset_store() -> None:
    """Forget the current store so that the next get_store() reads the settings again."""
    set_store(None)


@receiver(setting_changed)
def _reset_on_change(*, setting: str, **kwargs: Any) -> None:
    if setting == "CHAT_WS":
        reset_store()
