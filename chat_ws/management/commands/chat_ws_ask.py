"""Ask a connected client a question from this process and print the answer."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from django.core.management.base import BaseCommand, CommandError

from chat_ws import api
from chat_ws.exceptions import QuestionError, StoreUnavailable
from chat_ws.store import get_store


class Command(BaseCommand):
    help = "Ask CLIENT_ID a question (iviewr-says) and print the answer; proves any process can ask."

    def add_arguments(self, parser: Any) -> None:
        parser.add_argument("client_id")
        parser.add_argument("text")
        parser.add_argument("--conversation", default="default")
        parser.add_argument("--timeout", type=float, default=300.0, help="seconds (default 300)")
        parser.add_argument("--json", action="store_true", help="print the whole answer message as JSON")

    def handle(self, *args: Any, **options: Any) -> None:
        try:
            answer = asyncio.run(self._ask(options))
        except (QuestionError, StoreUnavailable) as exc:
            raise CommandError(f"{type(exc).__name__}: {exc}") from exc
        if options["json"]:
            self.stdout.write(json.dumps({"text": answer.text, "table": answer.table, "p_key": answer.p_key}))
        else:
            self.stdout.write(answer.text or "")

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
