"""System checks of chat_ws's settings."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from chat_ws.checks import check_settings

ROOT = Path(__file__).resolve().parent.parent


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
    assert "chat_ws.E009" in ids(settings, EDN_KEYWORD_FIELDS="conversation-id")
    assert "chat_ws.E009" in ids(settings, EDN_KEYWORD_FIELDS=["ok", 3])
    assert "chat_ws.E009" not in ids(settings, EDN_KEYWORD_FIELDS=["conversation-id"])


def test_key_layout_values(settings: Any) -> None:
    assert "chat_ws.E011" in ids(settings, KEY_PREFIX="site{a}")
    assert "chat_ws.E011" in ids(settings, KEY_PREFIX="")
    assert "chat_ws.E012" in ids(settings, KEY_BUCKETS=0)
    assert "chat_ws.E012" in ids(settings, KEY_BUCKETS=16385)
    assert "chat_ws.E012" in ids(settings, KEY_BUCKETS="256")
    assert ids(settings, KEY_PREFIX="site:a", KEY_BUCKETS=1) == set()


def cluster_layer(settings: Any, layer: dict[str, Any]) -> set[str]:
    settings.CHANNEL_LAYERS = {"default": layer}
    return ids(settings, REDIS_URL="redis://10.0.0.5:7000", REDIS_CLUSTER=True)


def test_a_cluster_store_needs_a_channel_layer_of_its_own(settings: Any) -> None:
    redis_layer = "chat_ws.layers.RedisChannelLayer"
    # the demo without CHANNEL_LAYER_URLS: the layer on the cluster's seed node
    assert "chat_ws.E010" in cluster_layer(settings, {"BACKEND": redis_layer, "CONFIG": {"hosts": ["redis://10.0.0.5:7000/0"]}})
    assert "chat_ws.E010" in cluster_layer(settings, {"BACKEND": redis_layer, "CONFIG": {"hosts": [{"address": "redis://10.0.0.5:7000"}]}})
    assert "chat_ws.E010" in cluster_layer(settings, {"BACKEND": "channels.layers.InMemoryChannelLayer"})
    sharded = {"BACKEND": redis_layer, "CONFIG": {"hosts": ["redis://10.0.0.6:6379", "redis://10.0.0.7:6379"]}}
    assert cluster_layer(settings, sharded) == set()
    # without REDIS_CLUSTER the layer may share the store's Redis
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": redis_layer, "CONFIG": {"hosts": ["redis://10.0.0.5:7000"]}}}
    assert ids(settings, REDIS_URL="redis://10.0.0.5:7000") == set()


def test_channels_redis_sharded_over_several_hosts_is_a_warning(settings: Any) -> None:
    hosts = {"hosts": ["redis://10.0.0.6:6379", "redis://10.0.0.7:6379"]}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "channels_redis.core.RedisChannelLayer", "CONFIG": hosts}}
    assert ids(settings) == {"chat_ws.W002"}
    settings.CHANNEL_LAYERS = {"default": {"BACKEND": "chat_ws.layers.RedisChannelLayer", "CONFIG": hosts}}
    assert ids(settings) == set()


def test_the_demo_reads_the_cluster_settings_from_its_environment() -> None:
    code = (
        "import django, os; os.environ['DJANGO_SETTINGS_MODULE'] = 'stbd_project.settings'; django.setup(); "
        "from django.conf import settings; from chat_ws.checks import check_settings; "
        "print(settings.CHAT_WS['REDIS_CLUSTER'], settings.CHANNEL_LAYERS['default']['CONFIG']['hosts'], "
        "sorted({p.id for p in check_settings()}))"
    )

    def demo(**env: str) -> str:
        full = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "REDIS_CLUSTER", "CHANNEL_LAYER_URLS")}
        out = subprocess.run([sys.executable, "-c", code], env={**full, **env}, cwd=ROOT, capture_output=True, text=True)
        assert out.returncode == 0, out.stderr
        return out.stdout.strip()

    seed = "redis://127.0.0.1:7000"
    assert demo(REDIS_URL=seed, REDIS_CLUSTER="1") == f"True ['{seed}'] ['chat_ws.E010']"
    layer = "redis://127.0.0.1:6380,redis://127.0.0.1:6381"
    assert demo(REDIS_URL=seed, REDIS_CLUSTER="1", CHANNEL_LAYER_URLS=layer) == (
        "True ['redis://127.0.0.1:6380', 'redis://127.0.0.1:6381'] []"
    )
    assert demo(REDIS_URL="redis://127.0.0.1:6379/0") == "False ['redis://127.0.0.1:6379/0'] []"


def test_unknown_key_is_a_warning(settings: Any) -> None:
    assert ids(settings, RATE_LIMT=5) == {"chat_ws.W001"}


def test_missing_channel_layer(settings: Any) -> None:
    settings.CHANNEL_LAYERS = {}
    assert "chat_ws.E001" in ids(settings)


def handler_module_errors(settings: Any, modules: Any) -> list[Any]:
    settings.CHAT_WS = {"HANDLER_MODULES": modules}
    return [problem for problem in check_settings() if problem.id == "chat_ws.E008"]


def test_configured_handler_modules_pass(settings: Any) -> None:
    assert handler_module_errors(settings, ["stbd_project.interview.handlers"]) == []


def test_missing_handler_module_is_an_error_with_a_hint(settings: Any) -> None:
    (problem,) = handler_module_errors(settings, ["stbd_project.interview.no_such_handlers"])
    assert "'stbd_project.interview.no_such_handlers'" in problem.msg
    assert "cannot be found" in problem.msg
    assert "dotted path" in problem.hint
    (problem,) = handler_module_errors(settings, ["no_such_package_chat_ws.handlers"])
    assert "No module named 'no_such_package_chat_ws'" in problem.msg


def test_error_inside_a_handler_module_shows_its_cause(
    settings: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "chat_ws_broken_handlers.py").write_text("import chat_ws_missing_dependency\n")
    monkeypatch.syspath_prepend(str(tmp_path))
    (problem,) = handler_module_errors(settings, ["chat_ws_broken_handlers"])
    assert "'chat_ws_broken_handlers' failed to import" in problem.msg
    assert "No module named 'chat_ws_missing_dependency'" in problem.msg
    assert "traceback" in problem.hint


def test_handler_modules_must_be_a_list(settings: Any) -> None:
    (problem,) = handler_module_errors(settings, "stbd_project.interview.handlers")
    assert "must be a list" in problem.msg


def test_manage_check_reports_a_bad_handler_module_without_a_traceback() -> None:
    env = {**os.environ, "DJANGO_SETTINGS_MODULE": "stbd_project.settings", "CHAT_WS_EXTRA_HANDLERS": "no_such.handlers"}
    env.pop("REDIS_URL", None)
    result = subprocess.run(
        [sys.executable, "manage.py", "check"], cwd=ROOT, env=env, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 1, result.stdout + result.stderr
    assert "chat_ws.E008" in result.stderr and "'no_such.handlers'" in result.stderr
    assert "Traceback" not in result.stderr
