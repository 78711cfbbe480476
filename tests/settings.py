"""Settings for the test suite: the demo site with in-memory defaults and quiet logs."""

from stbd_project.settings import *  # noqa: F401,F403

CHANNEL_LAYERS = {"default": {"BACKEND": "channels.layers.InMemoryChannelLayer"}}
CHAT_WS = {"HANDLER_MODULES": ["stbd_project.interview.handlers"]}
DATABASES = {"default": {"ENGINE": "django.db.backends.sqlite3", "NAME": ":memory:"}}
PASSWORD_HASHERS = ["django.contrib.auth.hashers.MD5PasswordHasher"]
LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "loggers": {"edn_format": {"level": "WARNING"}},
}
