"""System checks of chat_ws's settings."""

from __future__ import annotations

from typing import Any

from chat_ws.checks import check_settings


def ids(settings: Any, **conf: Any) -> set[str]:
    settings.CHAT_WS = conf
    return {problem.id for problem in check_settings()}


def test_defaults_pass(settings: Any) -> None:
    assert ids(settings) == set()


def test_bad_values_are_errors(settings: Any) -> None:
    assert "chat_ws.E002" in ids(settings, RATE_LIMIT=0)
    assert "chat_ws.E002" in ids(settings, MAX_MESSAGE_BYTES="64k")
    assert "chat_ws.E003" in ids(settings, DEFAULT_CODEC="xml")
    assert "chat_ws.E006" in ids(settings, HEALTH_TOKEN="")
    assert "chat_ws.E007" in ids(settings, MAX_CONNECTIONS_PER_USER=0)
    assert "chat_ws.E004" in ids(settings, STORE="chat_ws.store.redis.RedisStore")


def test_unknown_key_is_a_warning(settings: Any) -> None:
    assert ids(settings, RATE_LIMT=5) == {"chat_ws.W001"}


def test_missing_channel_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {}
    assert "chat_ws.E001" in ids(settings)
