"""Integration tests run under every ASGI server the project supports: daphne (``make run``, the
design's server) and uvicorn (``make serve``, the faster one recommended for production)."""

from __future__ import annotations

from typing import Any

import pytest

from devtools.serve import SERVERS

ONE_SERVER = {
    "test_install.py",  # follows README's install steps literally (daphne)
    "test_chaos.py",  # starts servers of its own (the production server), once
}


def pytest_generate_tests(metafunc: Any) -> None:
    if "live_db" in metafunc.fixturenames and metafunc.definition.path.name not in ONE_SERVER:
        metafunc.parametrize("asgi_server", SERVERS, indirect=True)


@pytest.fixture(autouse=True)
def asgi_server(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """The server this test's live servers run (tests.live reads CHAT_WS_TEST_SERVER)."""
    server = getattr(request, "param", "daphne")
    monkeypatch.setenv("CHAT_WS_TEST_SERVER", server)
    return str(server)
