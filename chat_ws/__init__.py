"""chat_ws: server-driven conversations over websockets for Django Channels.

The public API lives in :mod:`chat_ws.api`; importing this package needs no app registry.
"""

__version__ = "0.1.0"
