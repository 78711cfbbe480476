"""Websocket URL patterns: include ``websocket_urlpatterns`` in your ASGI URLRouter."""

from django.urls import path

from chat_ws.consumers import ChatConsumer

websocket_urlpatterns = [
    path("ws", ChatConsumer.as_asgi(), name="chat_ws"),
]
