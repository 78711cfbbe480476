"""Getting messages to a client's socket, in this process or in any other one."""

from __future__ import annotations

import hashlib
import logging
from typing import Any, Protocol

from channels.layers import get_channel_layer

from chat_ws import protocol
from chat_ws.conf import setting
from chat_ws.exceptions import ConfigurationError, InvalidMessage, StoreUnavailable
from chat_ws.redis_policy import is_unreachable
from chat_ws.runtime import runtime
from chat_ws.types import Message

logger = logging.getLogger(__name__)

DELIVER_EVENT = "chat.deliver"
CLOSE_EVENT = "chat.close"


class Endpoint(Protocol):
    """What a local socket (a ChatConsumer) offers to delivery and presence."""

    client_id: str
    channel_name: str
    scope: dict[str, Any]
    groups: list[str]  # channel-layer groups it belongs to (channels discards them on disconnect)
    session_closed: bool  # its ClientSession row was closed already (by a forget)
    is_closed: bool  # closing or closed: nothing more is sent
    closed_by_server: bool  # the server closed it (replaced, forgotten): its records are not its own
    close_reason: str | None  # why it closed, for the session row

    async def push(self, message: Message) -> None:
        """Encode and send one message down the socket."""
        ...

    async def shut(self, code: int, reason: str) -> None:
        """Close the socket with a close code, recording why."""
        ...


def group_name(client_id: str) -> str:
    """The channel-layer group of one client-id (valid for every channels layer)."""
    if len(client_id) <= 80 and ":" not in client_id:
        return f"chat_ws.{client_id}"
    return "chat_ws.h." + hashlib.sha256(client_id.encode()).hexdigest()[:48]


def register(endpoint: Endpoint) -> Endpoint | None:
    """Make endpoint the local socket of its client-id; return the one it displaced."""
    local_ = runtime().endpoints
    previous = local_.get(endpoint.client_id)
    local_[endpoint.client_id] = endpoint
    return previous if previous is not endpoint else None


def unregister(endpoint: Endpoint) -> bool:
    """Forget endpoint if it is still the local socket of its client-id."""
    local_ = runtime().endpoints
    if local_.get(endpoint.client_id) is endpoint:
        del local_[endpoint.client_id]
        return True
    return False


def local(client_id: str) -> Endpoint | None:
    """The socket of client_id in this process, if any."""
    return runtime().endpoints.get(client_id)


def endpoints() -> list[Endpoint]:
    """The sockets this process serves."""
    return list(runtime().endpoints.values())


def local_count() -> int:
    """How many sockets this process serves."""
    return len(runtime().endpoints)


def layer() -> Any:
    """The configured channel layer; ConfigurationError when there is none."""
    found = get_channel_layer(setting("CHANNEL_LAYER"))
    if found is None:
        raise ConfigurationError("chat_ws needs a channel layer (CHANNEL_LAYERS)")
    return found


async def join(endpoint: Endpoint) -> None:
    """Add a socket to its client's group so that any process can reach it."""
    group = group_name(endpoint.client_id)
    try:
        await layer().group_add(group, endpoint.channel_name)
    except Exception as exc:
        if is_unreachable(exc):
            raise StoreUnavailable(f"channel layer unreachable: {exc}") from exc
        raise
    endpoint.groups = [group]


async def deliver(client_id: str, message: Message) -> None:
    """Send message to client_id's socket wherever it is; nothing happens when none is open."""
    protocol.validate(message)  # before anything leaves this process
    endpoint = runtime().endpoints.get(client_id)
    if endpoint is not None:
        await endpoint.push(message)
        return
    try:
        await layer().group_send(group_name(client_id), {"type": DELIVER_EVENT, "message": message})
    except TypeError as exc:  # the layer's serializer refused the payload
        raise InvalidMessage(f"message cannot cross the channel layer: {exc}") from exc
    except Exception as exc:
        if is_unreachable(exc):
            raise StoreUnavailable(f"channel layer unreachable: {exc}") from exc
        raise


def detach(client_id: str) -> Endpoint | None:
    """Stop delivering to client_id's local socket (it is about to close); return it."""
    return runtime().endpoints.pop(client_id, None)


async def close(client_id: str, code: int, reason: str, endpoint: Endpoint | None = None) -> None:
    """Close client_id's socket wherever it is (endpoint: the local socket, already detached)."""
    endpoint = endpoint or runtime().endpoints.pop(client_id, None)
    if endpoint is not None:
        await endpoint.shut(code, reason)
        return
    await layer().group_send(
        group_name(client_id), {"type": CLOSE_EVENT, "code": code, "reason": reason}
    )


async def close_channel(channel_name: str, code: int, reason: str) -> None:
    """Close the socket served by one channel name (an older connection of a client-id)."""
    for endpoint in list(runtime().endpoints.values()):
        if endpoint.channel_name == channel_name:
            await endpoint.shut(code, reason)
            return
    await layer().send(channel_name, {"type": CLOSE_EVENT, "code": code, "reason": reason})
