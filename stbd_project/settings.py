"""Settings of the demo site, read from the environment.

REDIS_URL      redis://host:port/db -> channels-redis layer and the Redis store (many processes);
               unset -> in-memory layer and store (one process).
REDIS_CLUSTER  1 -> REDIS_URL is a seed node of a Redis Cluster holding the store.
CHANNEL_LAYER_URLS  comma-separated Redis URLs the channel layer shards over (required with
               REDIS_CLUSTER=1: channels-redis does not support Redis Cluster); unset -> REDIS_URL.
DATABASE_URL   any URL dj-database-url reads; unset -> SQLite file db.sqlite3 (or SQLITE_PATH).
"""

from __future__ import annotations

import os
from pathlib import Path

import dj_database_url

BASE_DIR = Path(__file__).resolve().parent.parent

SECRET_KEY = os.environ.get("DJANGO_SECRET_KEY", "demo-only-secret-key-change-me")
DEBUG = os.environ.get("DJANGO_DEBUG", "1") == "1"
ALLOWED_HOSTS = os.environ.get("ALLOWED_HOSTS", "localhost,127.0.0.1,[::1]").split(",")

INSTALLED_APPS = [
    "daphne",
    "django.contrib.admin",
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "django.contrib.staticfiles",
    "channels",
    "chat_ws",
    "stbd_project.interview",
]

MIDDLEWARE = [
    "django.middleware.security.SecurityMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
]

ROOT_URLCONF = "stbd_project.urls"
ASGI_APPLICATION = "stbd_project.asgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "stbd_project" / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
            ]
        },
    }
]

DATABASES = {
    "default": dj_database_url.config(
        default="sqlite:///" + os.environ.get("SQLITE_PATH", str(BASE_DIR / "db.sqlite3")),
        # 0: under ASGI each sync hop may run on a new thread, and a connection kept per thread
        # outlives its use (a PostgreSQL server ran out of connections); SQLite is set below.
        conn_max_age=0,
    )
}
if DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # A pool per process (psycopg_pool): each sync hop borrows a connection and gives it back, so
    # nothing is opened per query (opening one cost most of the interviews' database time) and
    # nothing is left per thread. DB_POOL_MAX bounds what one process holds.
    DATABASES["default"].setdefault("OPTIONS", {})["pool"] = {
        "min_size": 1,
        "max_size": int(os.environ.get("DB_POOL_MAX", "8")),
        "timeout": 10,
    }
elif DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    DATABASES["default"]["CONN_MAX_AGE"] = 600  # one connection per thread, not one per query batch
    DATABASES["default"].setdefault("OPTIONS", {})
    DATABASES["default"]["OPTIONS"].update(
        {"timeout": 20, "transaction_mode": "IMMEDIATE", "init_command": "PRAGMA journal_mode=WAL;"}
    )

REDIS_URL = os.environ.get("REDIS_URL") or None
REDIS_CLUSTER = os.environ.get("REDIS_CLUSTER", "0") == "1"
LAYER_URLS = [u.strip() for u in os.environ.get("CHANNEL_LAYER_URLS", "").split(",") if u.strip()]

if REDIS_URL or LAYER_URLS:
    CHANNEL_LAYERS = {
        "default": {
            "BACKEND": "chat_ws.layers.RedisChannelLayer",
            "CONFIG": {
                "hosts": LAYER_URLS or [REDIS_URL],
                "prefix": os.environ.get("CHAT_WS_PREFIX", "chat_ws") + ":layer:",
                "capacity": 2000,
                "group_expiry": 7 * 24 * 3600,
            },
        }
    }
else:
    CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}

CHAT_WS = {
    "REDIS_URL": REDIS_URL,
    "REDIS_CLUSTER": REDIS_CLUSTER,
    "KEY_PREFIX": os.environ.get("CHAT_WS_PREFIX", "chat_ws"),
    "HANDLER_MODULES": ["stbd_project.interview.handlers"]
    + [m for m in os.environ.get("CHAT_WS_EXTRA_HANDLERS", "").split(",") if m],
    "RECONNECT_GRACE": float(os.environ.get("CHAT_WS_RECONNECT_GRACE", "60")),
    # Load tests answer thousands of questions per second on one socket: raise the limits there.
    "RATE_LIMIT": float(os.environ.get("CHAT_WS_RATE_LIMIT", "30")),
    "RATE_BURST": int(os.environ.get("CHAT_WS_RATE_BURST", "60")),
    "HEALTH_TOKEN": os.environ.get("CHAT_WS_HEALTH_TOKEN") or None,
    "QUESTION_CHECK_INTERVAL": float(os.environ.get("CHAT_WS_QUESTION_CHECK_INTERVAL", "30")),
    "ANSWER_CONSUME_TIMEOUT": float(os.environ.get("CHAT_WS_ANSWER_CONSUME_TIMEOUT", "30")),
    "SWEEP_LOCK_TTL": float(os.environ.get("CHAT_WS_SWEEP_LOCK_TTL", "60")),
    # The original client reads these demo fields as keywords (:conversation-id :process).
    "EDN_KEYWORD_FIELDS": ["msg-type", "conversation-id", "conversation"],
}

# The demo's load-test conversation (start-conversation :loadtest), driven by `python -m loadtest`.
STBD_LOADTEST = os.environ.get("STBD_LOADTEST", "1") == "1"

AUTH_PASSWORD_VALIDATORS: list[dict[str, str]] = []
LANGUAGE_CODE = "en-us"
TIME_ZONE = "UTC"
USE_I18N = True
USE_TZ = True
STATIC_URL = "static/"
STATIC_ROOT = BASE_DIR / "staticfiles"
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": os.environ.get("LOG_LEVEL", "INFO")},
    "loggers": {
        "daphne": {"level": "WARNING"},
        "edn_format": {"level": "WARNING"}, "django.channels.server": {"level": "WARNING"}},
}
