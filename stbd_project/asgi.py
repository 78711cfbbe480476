"""ASGI entry point of the demo site: HTTP through Django, websockets through chat_ws."""

import os

from django.core.asgi import get_asgi_application

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "stbd_project.settings")
django_asgi_app = get_asgi_application()

from django.conf import settings  # noqa: E402
from django.contrib.staticfiles.handlers import ASGIStaticFilesHandler  # noqa: E402

if settings.DEBUG or os.environ.get("SERVE_STATIC") == "1":
    django_asgi_app = ASGIStaticFilesHandler(django_asgi_app)  # the demo serves its own static files

from channels.routing import ProtocolTypeRouter, URLRouter  # noqa: E402
from channels.security.websocket import AllowedHostsOriginValidator  # noqa: E402

from chat_ws.auth import ChatAuthMiddlewareStack  # noqa: E402
from chat_ws.routing import websocket_urlpatterns  # noqa: E402

application = ProtocolTypeRouter(
    {
        "http": django_asgi_app,
        "websocket": AllowedHostsOriginValidator(ChatAuthMiddlewareStack(URLRouter(websocket_urlpatterns))),
    }
)

# Thousands of long-lived sockets make full garbage collections long (hundreds of ms), and a
# pause over a second trips the websocket close handshake. Start-up objects never die: move
# them out of the collector's way, and collect the young generation less often.
if os.environ.get("CHAT_WS_GC_TUNING", "1") == "1":
    import gc

    gc.freeze()
    gc.set_threshold(20_000, 20, 20)
