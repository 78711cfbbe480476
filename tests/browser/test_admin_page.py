"""The admin's session list in a real Chromium at 1280 px: the last columns stay in view."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

try:
    from playwright.async_api import expect
except ImportError:  # the browser fixture skips, or fails under CI=true, with the reason
    expect = None

from tests.live import Database, LiveServer

pytestmark = pytest.mark.browser

UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
LONG_REASON = "store lost: the question vanished while the client was reconnect"  # 64, the field's max
LAST_COLUMNS = ("Closed at", "Close reason", "open?")  # headers of the session list
SEED = f"""
import uuid
from datetime import timedelta
from django.contrib.auth import get_user_model
from django.utils import timezone
from chat_ws.models import ClientSession

user = get_user_model().objects.create_superuser("root-administrator", "root@example.com", "pw")
now = timezone.now()
def row(client_id, **kw):
    ClientSession.objects.create(
        client_id=client_id, channel_name="specific.0123456789abcdef!0123456789abcdef",
        server_id="web-1.example.internal-12345-abcdef", user=user,
        remote_addr="203.0.113.17", last_seen_at=now, **kw)
row({UUID!r}, closed_at=now, close_reason={LONG_REASON!r})
row(str(uuid.uuid4()), closed_at=now - timedelta(minutes=5), close_reason="inactive")
row(str(uuid.uuid4()))
"""


@pytest.fixture(scope="module")
def admin_site() -> Iterator[LiveServer]:
    """A demo-site daphne on its own database with a superuser and three sessions."""
    db = Database()
    server = LiveServer(db, redis_url=None, prefix="chat_ws_admin_page")
    try:
        server.start()
        seeded = server.manage("shell", "-c", SEED)
        assert seeded.returncode == 0, seeded.stderr
        yield server
    finally:
        server.stop()
        db.cleanup()


async def test_session_list_keeps_its_last_columns_in_view_at_1280px(context: Any, admin_site: LiveServer) -> None:
    page = await context.new_page()
    await page.goto(admin_site.http_url + "/admin/login/?next=/admin/chat_ws/clientsession/")
    await page.fill("#id_username", "root-administrator")
    await page.fill("#id_password", "pw")
    await page.click("input[type=submit]")
    await expect(page.locator("#result_list tbody tr")).to_have_count(3)

    width = page.viewport_size["width"]
    assert width == 1280
    results = await page.locator("#changelist .results").bounding_box()
    assert results is not None
    right = min(width, results["x"] + results["width"])  # the table may scroll inside .results
    for column in LAST_COLUMNS:
        header = page.locator("#result_list thead th", has_text=re.compile(rf"^\s*{re.escape(column)}\s*$", re.I))
        box = await header.bounding_box()
        assert box is not None, column
        assert box["x"] >= 0 and box["x"] + box["width"] <= right, (column, box, right)
    assert await page.evaluate("document.documentElement.scrollWidth") <= width  # no sideways scrolling
    await expect(page.locator(f'#result_list span[title="{UUID}"]')).to_have_text(UUID[:8] + "…")
    await expect(page.locator(f'#result_list span[title="{LONG_REASON}"]')).to_be_visible()
    await page.close()
