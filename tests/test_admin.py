"""The ClientSession admin: read-only pages, pending questions, and the actions through services."""

from __future__ import annotations

import asyncio
import re
import time
from typing import Any

import pytest
from asgiref.sync import sync_to_async
from django.contrib.auth import get_user_model
from django.contrib.auth.models import Permission
from django.urls import reverse

from chat_ws import api, sessions
from chat_ws.exceptions import WS_4002_FORGOTTEN, ClientGone, QuestionCancelled
from chat_ws.models import ClientSession
from chat_ws.store import get_store
from chat_ws.sweeper import run_sync
from chat_ws.types import Question
from tests.comm import Comm
from tests.seeding import add

pytestmark = pytest.mark.django_db(transaction=True)

WAIT = 5.0  # seconds any awaited outcome may take
CHANGELIST = "admin:chat_ws_clientsession_changelist"
QUESTIONS = "admin:chat_ws_clientsession_questions"
CANCEL = "admin:chat_ws_clientsession_cancel"


def session(client_id: str = "client-a", **kw: Any) -> ClientSession:
    return ClientSession.objects.create(client_id=client_id, channel_name=f"chan-{client_id}", server_id="srv", **kw)


def add_question(p_key: str, client_id: str = "client-a", text: str = "What do you make?") -> None:
    now = time.time()
    question = Question(
        p_key, client_id, "process", {"dispatch-key": "iviewr-says", "text": text}, now - 90, now + 3600
    )
    store = get_store()
    run_sync(lambda: add(store, question))


def staff_user(*perms: str) -> Any:
    user = get_user_model().objects.create_user("op", password="pw", is_staff=True)
    for codename in perms:
        user.user_permissions.add(Permission.objects.get(codename=codename))
    return user


# ---------------------------------------------------------------------- pages
def test_changelist_columns_filters_search_and_dates(admin_client: Any) -> None:
    from django.utils import timezone

    session("client-a")
    session("client-b", closed_at=timezone.now(), close_reason="inactive")
    response = admin_client.get(reverse(CHANGELIST))
    assert response.status_code == 200
    page = response.content.decode()
    for column in ("Client id", "User", "Opened at", "Closed at", "Close reason", "open?"):
        assert column in page, column
    assert "client-a" in page and "client-b" in page
    assert reverse(QUESTIONS) in page
    searched = admin_client.get(reverse(CHANGELIST), {"q": "client-a"}).content.decode()
    assert "client-a" in searched and "client-b" not in searched
    assert "client-b" not in admin_client.get(reverse(CHANGELIST), {"open": "yes"}).content.decode()
    assert admin_client.get(reverse(CHANGELIST), {"close_reason": "inactive"}).status_code == 200
    year = time.gmtime().tm_year
    assert admin_client.get(reverse(CHANGELIST), {"opened_at__year": year}).status_code == 200


def test_change_page_is_read_only_and_shows_pending_questions(admin_client: Any, backend: str) -> None:
    row = session("client-a")
    add_question("promise-1", "client-a", "What do you make?")
    add_question("promise-2", "client-b", "Someone else's question")
    response = admin_client.get(reverse("admin:chat_ws_clientsession_change", args=[row.pk]))
    assert response.status_code == 200
    page = response.content.decode()
    assert "What do you make?" in page and "promise-1" in page
    assert "Someone else" not in page
    assert 'name="_save"' not in page  # read-only
    assert 'value="force_disconnect"' in page and 'value="send_alive_check"' in page


def test_questions_page_lists_every_pending_question(admin_client: Any, backend: str) -> None:
    add_question("promise-1", "client-a", "What do you make?")
    add_question("promise-2", "client-b", "How many machines?")
    page = admin_client.get(reverse(QUESTIONS)).content.decode()
    for text in ("client-a", "client-b", "process", "What do you make?", "How many machines?", "1\xa0minute"):
        assert text in page, text
    assert 'name="p_key"' in page and "Cancel selected questions" in page
    one = admin_client.get(reverse(QUESTIONS), {"client_id": "client-b"}).content.decode()
    assert "How many machines?" in one and "What do you make?" not in one


def test_questions_page_when_the_store_is_down(admin_client: Any, settings: Any, backend: str) -> None:
    from tests.conftest import chat_ws_settings

    chat_ws_settings(settings, REDIS_URL="redis://127.0.0.1:1/0", STORE="chat_ws.store.redis.RedisStore")
    response = admin_client.get(reverse(QUESTIONS))
    assert response.status_code == 200
    assert "The store is unreachable" in response.content.decode()


def test_nothing_can_be_added_changed_or_deleted(admin_client: Any) -> None:
    row = session()
    assert admin_client.get(reverse("admin:chat_ws_clientsession_add")).status_code == 403
    assert admin_client.get(reverse("admin:chat_ws_clientsession_delete", args=[row.pk])).status_code == 403
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    assert "delete_selected" not in page


UUID = "1b4e28ba-2fa1-11d2-883f-0016d3cca427"
LONG_REASON = "store lost: the question vanished while the client was reconnect"  # 64, the field's max
MOMENT = re.compile(  # a compact timestamp, the full one in its title
    r'<time datetime="[^"]+" title="[^"]+">'
    r'<span class="nowrap">\d{4}-\d\d-\d\d</span> <span class="nowrap">\d\d:\d\d</span></time>'
)


def test_changelist_shortens_long_values_to_fit_the_page(admin_client: Any) -> None:
    from django.utils import timezone

    user = get_user_model().objects.create_user("a-rather-long-user-name", password="pw")
    session(UUID, closed_at=timezone.now(), close_reason=LONG_REASON, user=user)
    session("client-a")
    page = admin_client.get(reverse(CHANGELIST)).content.decode()
    results = page.split('id="result_list"', 1)[1].split("</table>", 1)[0]
    assert f'<span class="nowrap" title="{UUID}">{UUID[:8]}…</span>' in results
    assert '<span class="nowrap" title="a-rather-long-user-name">a-rather-lo…</span>' in results
    assert f'<span title="{LONG_REASON}">{LONG_REASON[:23]}…</span>' in results
    assert f">{UUID}<" not in results and f">{LONG_REASON}<" not in results  # whole values only in titles
    assert '<span class="nowrap" title="client-a">client-a</span>' in results  # short ids stay whole
    assert '<td class="field-reason">-</td>' in results and '<td class="field-closed">-</td>' in results
    assert len(MOMENT.findall(results)) == 3  # opened twice, closed once
    ordered = admin_client.get(reverse(CHANGELIST), {"o": "1"})  # the client-id column still sorts
    assert ordered.status_code == 200 and "sortremove" in ordered.content.decode()


def test_change_page_actions_use_the_admin_button_styles(admin_client: Any) -> None:
    row = session(UUID)
    page = admin_client.get(reverse("admin:chat_ws_clientsession_change", args=[row.pk])).content.decode()
    actions = page.split('id="client-actions"', 1)[1].split("</form>", 1)[0]
    assert '<div class="submit-row">' in actions
    assert '<button type="submit" class="button default" name="action" value="send_alive_check">' in actions
    assert '<button type="submit" class="button" name="action" value="force_disconnect">' in actions
    assert "style=" not in page.split('id="client-state"', 1)[1]
    tools = page.split('<ul class="object-tools">', 1)[1].split("</ul>", 1)[0]
    assert f'href="{reverse(QUESTIONS)}?client_id={UUID}"' in tools
    assert "Last seen at" in page  # not in the list, to keep it narrow


# ---------------------------------------------------------------------- permissions
def test_staff_only(client: Any) -> None:
    client.force_login(get_user_model().objects.create_user("someone", password="pw"))
    response = client.get(reverse(QUESTIONS))
    assert response.status_code == 302 and "/login/" in response["Location"]


def test_view_permission_sees_but_cannot_act(client: Any, backend: str) -> None:
    client.force_login(staff_user("view_clientsession"))
    add_question("promise-1")
    page = client.get(reverse(QUESTIONS)).content.decode()
    assert "What do you make?" in page and 'name="p_key"' not in page
    assert client.post(reverse(CANCEL), {"p_key": "promise-1"}).status_code == 403
    assert 'value="force_disconnect"' not in client.get(reverse(CHANGELIST)).content.decode()
    assert len(run_sync(lambda: get_store().pending())) == 1


def test_no_permission_no_questions(client: Any) -> None:
    client.force_login(staff_user())
    assert client.get(reverse(QUESTIONS)).status_code == 403


def test_manage_permission_can_act(client: Any, backend: str) -> None:
    client.force_login(staff_user("view_clientsession", "change_clientsession"))
    add_question("promise-1")
    assert 'name="p_key"' in client.get(reverse(QUESTIONS)).content.decode()
    response = client.post(reverse(CANCEL), {"p_key": "promise-1", "next": reverse(QUESTIONS)})
    assert response.status_code == 302
    assert run_sync(lambda: get_store().pending()) == []


def test_cancel_refuses_get_and_foreign_redirects(admin_client: Any) -> None:
    assert admin_client.get(reverse(CANCEL)).status_code == 405
    response = admin_client.post(reverse(CANCEL), {"p_key": "gone", "next": "https://evil.example/"})
    assert response["Location"] == reverse(QUESTIONS)


# ---------------------------------------------------------------------- actions on live sockets
@pytest.fixture
async def admin_async(async_client: Any) -> Any:
    user = await sync_to_async(get_user_model().objects.create_superuser)("root", "root@example.com", "pw")
    await async_client.aforce_login(user)
    return async_client


async def _session_pk(client_id: str) -> int:
    await sessions.flush()
    row = await ClientSession.objects.filter(client_id=client_id).afirst()
    assert row is not None
    return row.pk


async def test_force_disconnect_action(admin_async: Any, store: Any) -> None:
    client = await Comm().connect()
    task = asyncio.create_task(api.ask(client.client_id, {"dispatch-key": "iviewr-says", "text": "Q?"}))
    await client.recv()
    pk = await _session_pk(client.client_id)
    response = await admin_async.post(
        reverse(CHANGELIST), {"action": "force_disconnect", "_selected_action": [pk], "index": 0}, follow=True
    )
    assert response.status_code == 200
    assert "Forgot 1 client(s); 1 pending question(s)" in response.content.decode()
    assert await client.close_code() == WS_4002_FORGOTTEN
    with pytest.raises(ClientGone):
        await asyncio.wait_for(task, WAIT)
    await sessions.flush()
    row = await ClientSession.objects.aget(pk=pk)
    assert row.close_reason == "admin" and not row.is_open
    await client.disconnect()


async def test_send_alive_check_action(admin_async: Any, store: Any) -> None:
    client = await Comm().connect()
    pk = await _session_pk(client.client_id)
    response = await admin_async.post(
        reverse(CHANGELIST), {"action": "send_alive_check", "_selected_action": [pk], "index": 0}, follow=True
    )
    assert "Sent alive? to 1 connected client(s)" in response.content.decode()
    assert (await client.recv())["dispatch-key"] == "alive?"
    assert (await store.connection(client.client_id)).alive_sent_at is not None
    await client.disconnect()


async def test_cancel_a_question(admin_async: Any, store: Any) -> None:
    client = await Comm().connect()
    task = asyncio.create_task(api.ask(client.client_id, {"dispatch-key": "iviewr-says", "text": "Q?"}))
    p_key = str((await client.recv())["p-key"])
    response = await admin_async.post(reverse(CANCEL), {"p_key": [p_key, "promise-gone"]}, follow=True)
    assert "Cancelled 1 question(s) (1 were already settled)." in response.content.decode()
    with pytest.raises(QuestionCancelled):
        await asyncio.wait_for(task, WAIT)
    cleared = await client.recv_until("clear-promise-keys")
    assert [str(k) for k in cleared["promise-keys"]] == [p_key]
    await client.disconnect()
