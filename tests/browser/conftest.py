"""Fixtures of the browser suite: Debian's Chromium driven by Playwright, and restartable servers."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator, Callable, Iterator
from typing import Any

import pytest

from tests.live import LiveServer

CHROMIUM = os.environ.get("CHAT_WS_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT = {"width": 1280, "height": 860}
EXPECT_TIMEOUT = 10_000  # milliseconds an expectation waits for the page


def _missing(reason: str) -> None:
    """Skip on a laptop without a browser; fail when CI=true, where the browser suite must run."""
    if os.environ.get("CI", "").lower() == "true":
        pytest.fail(reason + " (CI=true: the browser suite must run)", pytrace=False)
    pytest.skip(reason)


@pytest.fixture
async def browser() -> AsyncIterator[Any]:
    """A headless Chromium (the system one; Playwright never downloads a browser here)."""
    if not os.access(CHROMIUM, os.X_OK):
        _missing(f"Chromium not found at {CHROMIUM} (apt-get install chromium, or set CHAT_WS_CHROMIUM)")
    try:
        from playwright.async_api import async_playwright, expect
    except ImportError:
        _missing("the playwright package is not installed")
    expect.set_options(timeout=EXPECT_TIMEOUT)
    async with async_playwright() as pw:
        found = await pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=LAUNCH_ARGS)
        yield found
        await found.close()


@pytest.fixture
async def context(browser: Any) -> AsyncIterator[Any]:
    """A fresh browser profile: its own cookies; each page in it has its own sessionStorage."""
    ctx = await browser.new_context(viewport=VIEWPORT)
    ctx.set_default_timeout(EXPECT_TIMEOUT)
    yield ctx
    await ctx.close()


@pytest.fixture
def restart_server() -> Iterator[Callable[[LiveServer], LiveServer]]:
    """``restart_server(old)`` starts a new process on old's port, database, Redis and prefix."""
    started: list[LiveServer] = []

    def restart(old: LiveServer) -> LiveServer:
        server = LiveServer(old.db, redis_url=old.redis_url, prefix=old.prefix, port=old.port)
        started.append(server)
        return server.start()

    yield restart
    for server in started:
        server.stop()
