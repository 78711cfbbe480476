"""ChatConsumer: one per websocket. Decodes, routes, encodes; everything else is a service."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from typing import Any
from urllib.parse import parse_qs

from channels.exceptions import StopConsumer
from channels.generic.websocket import AsyncWebsocketConsumer
from channels.layers import get_channel_layer

from chat_ws import delivery, metrics, presence, promises, protocol, security, shutdown
from chat_ws.codec import EDN, Codec, negotiate
from chat_ws.conf import get_settings
from chat_ws.dispatch import Context, dispatch
from chat_ws.limits import TokenBucket
from chat_ws.redis_policy import reconnect_delay
from chat_ws.runtime import runtime
from chat_ws.exceptions import (
    WS_1008_POLICY_VIOLATION,
    WS_1009_MESSAGE_TOO_BIG,
    WS_1012_SERVICE_RESTART,
    WS_4008_POLICY_VIOLATION,
    WS_4009_MESSAGE_TOO_BIG,
    WS_4012_SERVICE_RESTART,
    MalformedMessage,
    StoreUnavailable,
)
from chat_ws.types import Message

logger = logging.getLogger(__name__)

SERVER_RESTART = "server-restart"  # close reason of the sockets a stopping process closes


def _socket_closed_errors() -> tuple[type[BaseException], ...]:
    """What the servers raise when the application sends on a socket that is closing or closed.

    daphne: autobahn's ``Disconnected`` ("Attempt to send on a closed protocol", a RuntimeError);
    uvicorn: ``ClientDisconnected`` (an OSError) from each of its websocket protocols; any server:
    a ``ConnectionError`` from a transport that broke. Nothing broader: a RuntimeError of another
    kind is a bug and propagates.
    """
    errors: list[type[BaseException]] = [ConnectionError]
    try:
        from autobahn.exception import Disconnected
    except ImportError:  # daphne is not installed
        pass
    else:
        errors.append(Disconnected)
    try:
        from uvicorn.protocols.utils import ClientDisconnected
    except ImportError:  # uvicorn is not installed
        pass
    else:
        errors.append(ClientDisconnected)
    return tuple(errors)


SOCKET_CLOSED_ERRORS = _socket_closed_errors()


def query_param(scope: dict[str, Any], name: str) -> str | None:
    """The first value of a query-string parameter, or None."""
    values = parse_qs(scope.get("query_string", b"").decode("latin-1")).get(name)
    return values[0] if values else None


def too_big(text: str, limit: int) -> bool:
    """True when text takes more than limit bytes in UTF-8 (cheap for short frames)."""
    if len(text) * 4 <= limit:
        return False
    return len(text) > limit or len(text.encode("utf-8", "surrogatepass")) > limit


class ChatConsumer(AsyncWebsocketConsumer):
    """The server end of one browser app instance's socket."""

    client_id: str = ""
    sent_questions: set[str]
    codec: Codec = EDN
    session_closed = False  # the row was closed for this socket already (forget)
    close_reason: str | None = None
    closed_by_server = False
    registered = False
    is_closed = False
    refused = False  # the handshake was refused: the consumer ends without waiting for a disconnect
    _early: list[str] | None = None
    _ended = False  # the disconnect was handled (presence has the close), or the consumer ended
    _on_end: asyncio.Future[None] | None = None  # what restart() waits for

    async def __call__(self, scope: dict[str, Any], receive: Any, send: Any) -> None:
        """Serve one socket: ASGI events in a direct loop, channel-layer events in their own task.

        Channels' own loop (``await_many_dispatch``) wraps every receive in a new task and an
        ``asyncio.wait``; this one awaits ``receive()`` itself. The layer is the one named by
        ``CHAT_WS["CHANNEL_LAYER"]``, the same that delivery sends through.
        """
        self.scope = scope
        self.base_send = send
        state = runtime()
        if not state.shutdown_hooked:  # now the server's own SIGTERM handler is in place
            state.shutdown_hooked = True
            shutdown.install()
        self.channel_layer = get_channel_layer(get_settings()["CHANNEL_LAYER"])
        events: asyncio.Task[None] | None = None
        if self.channel_layer is not None:
            self.channel_name = await self.channel_layer.new_channel()
            events = asyncio.create_task(self._serve_layer_events())
        try:
            while not self.refused:
                await self.dispatch(await receive())
        except StopConsumer:
            pass
        finally:
            self._end()
            if events is not None:
                events.cancel()
                try:
                    await events
                except asyncio.CancelledError:
                    pass

    async def _serve_layer_events(self) -> None:
        """Events other processes send to this socket's channel, one at a time, in order.

        A failing receive (Redis restarting, for any layer) is retried with the shared backoff:
        the socket stays open and keeps its questions, where channels would end the consumer.
        """
        failures = 0
        while True:
            try:
                event = await self.channel_layer.receive(self.channel_name)
                failures = 0
            except asyncio.CancelledError:
                raise
            except Exception as exc:
                delay = reconnect_delay(failures)
                failures += 1
                logger.warning("channel layer receive for %s failed (%s); retrying in %.1fs", self.client_id, exc, delay)
                await asyncio.sleep(delay)
                continue
            try:
                await self.layer_event(event)
            except Exception:
                logger.exception("failed to handle a %r event for %s", event.get("type"), self.client_id)

    async def layer_event(self, event: dict[str, Any]) -> None:
        """Route one channel-layer event (no per-event thread hop: these handlers use no ORM)."""
        kind = event.get("type")
        if kind == delivery.DELIVER_EVENT:
            await self.chat_deliver(event)
        elif kind == delivery.CLOSE_EVENT:
            await self.chat_close(event)
        elif kind == delivery.ORPHANED_EVENT:
            await promises.orphaned(str(event["entry"]))
        else:
            logger.warning("ignored a channel-layer event of unknown type %r for %s", kind, self.client_id)

    async def dispatch(self, message: dict[str, Any]) -> None:
        """Route ASGI events without channels' per-event database cleanup (a thread hop each):
        chat_ws reaches the ORM only through database_sync_to_async, which cleans up itself."""
        kind = message["type"]
        if kind == "websocket.receive":
            await self.websocket_receive(message)
        elif kind == "websocket.connect":
            await self.websocket_connect(message)
        elif kind == "websocket.disconnect":
            await self.websocket_disconnect(message)
        else:
            await super().dispatch(message)

    async def websocket_disconnect(self, message: dict[str, Any]) -> None:
        """Leave the groups a subclass joined, hand the closed socket to presence, end the consumer.

        As channels' own, without its database-cleanup hop, and an unreachable layer does not
        stop presence from recording the disconnect.
        """
        for group in self.groups or ():
            try:
                await self.channel_layer.group_discard(group, self.channel_name)
            except Exception as exc:  # the group membership expires with the layer's group_expiry
                logger.warning("could not leave group %s for %s: %s", group, self.client_id, exc)
        await self.disconnect(int(message.get("code", 1005)))
        raise StopConsumer()

    async def connect(self) -> None:
        """Validate the client-id, pick the codec, register the connection."""
        if runtime().stopping:
            logger.info("refused a websocket: this process is shutting down")
            await self._refuse()
            return
        conf = get_settings()
        client_id = query_param(self.scope, "client-id")
        if not protocol.valid_client_id(client_id):
            logger.info("refused a websocket without a valid client-id")
            await self._refuse()
            return
        assert client_id is not None
        self.client_id = client_id
        self.max_bytes: int = conf["MAX_MESSAGE_BYTES"]
        self.max_nesting: int = conf["MAX_NESTING"]
        self.bucket = TokenBucket(conf["RATE_LIMIT"], conf["RATE_BURST"])
        self.abuse_strikes: int = conf["RATE_ABUSE_STRIKES"]
        self.codec, subprotocol = negotiate(
            self.scope.get("subprotocols") or [], conf["DEFAULT_CODEC"], conf["EDN_KEYWORD_FIELDS"]
        )
        self.ctx = Context(client_id, self.channel_name, self.scope)
        self.sent_questions: set[str] = set()
        self._early: list[str] | None = []  # frames pushed before the handshake completes
        try:
            refusal = await security.admit(self.scope, client_id, self.channel_name)
            if refusal is not None:
                # accept first so that the browser sees the code
                if await self._to_socket(self.accept(subprotocol), "accept"):
                    await self.shut(refusal, "refused")
                return
            await presence.connected(self)
        except StoreUnavailable as exc:
            logger.warning("refusing %s: %s", client_id, exc)
            delivery.unregister(self)
            await self._refuse()
            return
        except Exception:
            logger.exception("could not register client %s; refusing the handshake", client_id)
            delivery.unregister(self)
            await self._refuse()
            return
        self.registered = True
        metrics.OPEN_CONNECTIONS.inc()
        # A client gone during the handshake: the server's disconnect event follows and hands the
        # socket to presence; its questions (re-sent below) stay pending for the next connection.
        accepted = await self._to_socket(self.accept(subprotocol), "accept")
        early, self._early = self._early, None
        for text in early or ():
            if not accepted or not await self._to_socket(self.send(text_data=text), "re-sent frame"):
                break
        if runtime().stopping:  # the shutdown began during the handshake
            await self._close_with(WS_1012_SERVICE_RESTART, WS_4012_SERVICE_RESTART, SERVER_RESTART)

    async def _refuse(self) -> None:
        """Refuse the handshake (HTTP 403) and end this consumer: some servers (uvicorn) send no
        websocket.disconnect after a refused handshake, and nothing was registered to clean up."""
        self.refused = True
        await self._to_socket(self.close(), "refusal")

    async def receive(self, text_data: str | None = None, bytes_data: bytes | None = None) -> None:
        """Decode one frame and route it; bad input gets an error reply, never a crash."""
        try:
            if text_data is None:
                if not self.bucket.allow():
                    await self._refuse_flood()
                    return
                logger.info("binary frame from %s", self.client_id)
                metrics.BAD_INPUT.labels(protocol.E_BINARY).inc()
                await self.push(protocol.error_reply(protocol.E_BINARY, "send text frames"))
                return
            if too_big(text_data, self.max_bytes):
                logger.info("frame over %d bytes from %s", self.max_bytes, self.client_id)
                metrics.BAD_INPUT.labels("too-big").inc()
                await self._close_with(WS_1009_MESSAGE_TOO_BIG, WS_4009_MESSAGE_TOO_BIG, "message-too-big")
                return
            if not self.bucket.allow():
                await self._refuse_flood()
                return
            try:
                message = self.codec.decode(text_data, max_nesting=self.max_nesting)
                key = protocol.dispatch_key(message)
            except MalformedMessage as exc:
                logger.info("malformed message from %s: %s", self.client_id, exc.reason)
                metrics.BAD_INPUT.labels(exc.reason).inc()
                await self.push(protocol.malformed_reply(exc))
                return
            message["client-id"] = self.client_id
            metrics.MESSAGES_IN.labels(metrics.key_label(key)).inc()
            await dispatch(self.ctx, key, message)
        except Exception:
            logger.exception("failed to handle a frame from %s", self.client_id)
            await self.push(protocol.error_reply(protocol.E_HANDLER_FAILED, "internal error"))

    async def disconnect(self, code: int) -> None:
        """Hand the closed socket to presence."""
        self.is_closed = True
        try:
            await self._record_disconnect(code)
        finally:
            self._end()

    def _end(self) -> None:
        self._ended = True
        if self._on_end is not None and not self._on_end.done():
            self._on_end.set_result(None)

    async def _record_disconnect(self, code: int) -> None:
        if not self.registered:
            return
        metrics.OPEN_CONNECTIONS.dec()
        try:
            await security.release(self.scope, self.channel_name)
        except StoreUnavailable:
            pass  # counted sockets age out
        try:
            await presence.disconnected(self, code)
        except StoreUnavailable as exc:
            logger.warning("cleanup after %s disconnected failed (%s); the sweep will finish it", self.client_id, exc)
        except Exception:
            logger.exception("cleanup after %s disconnected failed; the sweep will finish it", self.client_id)

    async def _refuse_flood(self) -> None:
        metrics.BAD_INPUT.labels(protocol.E_RATE_LIMITED).inc()
        if self.bucket.strikes >= self.abuse_strikes:
            logger.warning("closing %s: %d messages over the rate limit", self.client_id, self.bucket.strikes)
            await self._close_with(WS_1008_POLICY_VIOLATION, WS_4008_POLICY_VIOLATION, "rate-limited")
            return
        if self.bucket.strikes == 1:
            logger.info("client %s is over the rate limit", self.client_id)
        await self.push(protocol.error_reply(protocol.E_RATE_LIMITED, "too many messages; slow down"))

    async def _close_with(self, code: int, fallback: int, reason: str) -> None:
        """Close with a protocol code, or its 4xxx twin where the server refuses to send it."""
        if self.is_closed:
            return
        self.close_reason = reason
        self.is_closed = True  # before the close goes out: nothing is sent after it
        try:
            await self.close(code)
        except SOCKET_CLOSED_ERRORS as exc:
            self._lost("close", exc)
        except Exception as exc:  # daphne's autobahn sends only 1000 and 3000-4999 from applications
            logger.debug(
                "the server refused close code %d for %s (%s); sending %d", code, self.client_id, exc, fallback
            )
            await self._to_socket(self.close(fallback), "close")

    async def _to_socket(self, sending: Awaitable[None], what: str) -> bool:
        """Await one send to the server; False when the socket turned out to be closed already.

        The socket is then marked closed and nothing more is sent on it; the server's disconnect
        event follows and hands it to presence, which holds its questions for the reconnect.
        Any other error propagates.
        """
        try:
            await sending
        except SOCKET_CLOSED_ERRORS as exc:
            self._lost(what, exc)
            return False
        return True

    def _lost(self, what: str, exc: BaseException) -> None:
        self.is_closed = True
        logger.debug(
            "socket of %s closed before its %s went out (%s: %s)", self.client_id, what, type(exc).__name__, exc
        )

    # ------------------------------------------------------------------ delivery endpoint
    async def push(self, message: Message) -> None:
        """Stamp, encode and send one message; a question already sent on this socket is not repeated."""
        if self.is_closed:
            return
        p_key = message.get("p-key")
        if p_key is not None:
            if p_key in self.sent_questions:
                return
            self.sent_questions.add(str(p_key))
        elif message.get("dispatch-key") == protocol.CLEAR_PROMISE_KEYS:
            self.sent_questions.difference_update(str(k) for k in message.get("promise-keys") or ())
        stamped = protocol.outgoing(message)
        text = self.codec.encode(stamped)
        if self._early is not None:
            self._early.append(text)
        elif not await self._to_socket(self.base_send({"type": "websocket.send", "text": text}), "message"):
            return  # closing: a question stays pending in the store and is re-sent on reconnect
        metrics.MESSAGES_OUT.labels(metrics.key_label(stamped["dispatch-key"])).inc()

    async def restart(self) -> None:
        """Close with 1012 (4012 where the server cannot send it) because this process stops, as
        an ordinary disconnect: presence holds the client's questions for its reconnect. Returns
        once the server's disconnect event has been handled."""
        if self._ended:
            return
        if self._on_end is None:
            self._on_end = asyncio.get_running_loop().create_future()
        if self._early is None:  # a socket still in its handshake closes itself once accepted (connect)
            await self._close_with(WS_1012_SERVICE_RESTART, WS_4012_SERVICE_RESTART, SERVER_RESTART)
        await asyncio.shield(self._on_end)

    async def shut(self, code: int, reason: str) -> None:
        """Close the socket from the server side, recording why."""
        if self.is_closed:
            return
        self.closed_by_server = True
        self.close_reason = reason
        self.is_closed = True
        await self._to_socket(self.close(code), "close")

    # ------------------------------------------------------------------ channel-layer events
    async def chat_deliver(self, event: dict[str, Any]) -> None:
        """A message for this client sent from another process."""
        await self.push(event["message"])

    async def chat_close(self, event: dict[str, Any]) -> None:
        """Another process asks this socket to close."""
        await self.shut(int(event.get("code", 1000)), str(event.get("reason", "")))
