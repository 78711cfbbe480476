"""The public API is whole: the demo site, like any site, needs nothing but chat_ws.api."""

from __future__ import annotations

import ast
from pathlib import Path

from chat_ws import api

ROOT = Path(__file__).resolve().parent.parent
WIRING = {"chat_ws.api", "chat_ws.routing", "chat_ws.auth"}  # ASGI routing and middleware are wiring, not API


def chat_ws_imports(path: Path) -> set[str]:
    found = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] == "chat_ws":
            if node.module == "chat_ws":
                found.update(f"chat_ws.{alias.name}" for alias in node.names)
            else:
                found.add(node.module)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.split(".")[0] == "chat_ws")
    return found


def test_the_demo_imports_chat_ws_only_through_its_api() -> None:
    offenders = {
        str(path.relative_to(ROOT)): sorted(chat_ws_imports(path) - WIRING)
        for path in sorted((ROOT / "stbd_project").rglob("*.py"))
        if chat_ws_imports(path) - WIRING
    }
    assert offenders == {}


def test_everything_listed_in_all_exists() -> None:
    assert [name for name in api.__all__ if not hasattr(api, name)] == []
