"""Ask a connected client a question from this process and print the answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from channels.layers import InMemoryChannelLayer
from django.core.management.base import BaseCommand, CommandError

from chat_ws import api, delivery
from chat_ws.exceptions import ConfigurationError, QuestionError, StoreUnavailable
from chat_ws.store import get_store
from chat_ws.store.memory import MemoryStore

NEEDS_REDIS = (
    "chat_ws_ask runs in its own process and reaches the site's sockets only through the site's "
    "shared Redis: set REDIS_URL in CHAT_WS and a channels_redis layer in CHANNEL_LAYERS, as the "
    "web processes have them."
)


class Command(BaseCommand):
    help = "Ask CLIENT_ID a question (iviewr-says) and print the answer; proves any process can ask."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("client_id")
        parser.add_argument("text")
        parser.add_argument("--conversation", default="default")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
        parser.add_argument("--json", action="store_true", help="print the whole answer message as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        self._require_shared_backends()
        try:
            answer = asyncio.run(self._ask(options))
        except (QuestionError, StoreUnavailable) as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
        if options["json"]:
            self.stdout.write(json.dumps({"text": answer.text, "table": answer.table, "p_key": answer.p_key}))
        else:
            self.stdout.write(answer.text or "")

    def _require_shared_backends(self) -> None:
        """Fail before asking when this process's store or channel layer is its own (in memory)."""
        if isinstance(get_store(), MemoryStore):
            raise CommandError(
                f"The store is in memory (no REDIS_URL), so no other process's socket is reachable. {NEEDS_REDIS}"
            )
        try:
            layer = delivery.layer()
        except ConfigurationError as exc:
            raise CommandError(f"{exc}. {NEEDS_REDIS}") from exc
        if isinstance(layer, InMemoryChannelLayer):
            raise CommandError(
                f"The channel layer is in memory, so no other process's socket is reachable. {NEEDS_REDIS}"
            )

    async def _ask(self, options: dict[str, Any]) -> api.Answer:
        try:
            return await api.ask(
                options["client_id"],
                {"dispatch-key": "iviewr-says", "text": options["text"]},
                conversation=options["conversation"],
                timeout=options["timeout"],
            )
        finally:
            await get_store().close()
