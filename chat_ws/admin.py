"""Read-only admin of connection history and pending questions, with a few safe actions.

Nothing here edits protocol state by hand: forgetting a client, sending an alive? check and
cancelling a question all go through the services (chat_ws.sweep, chat_ws.promises).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any, TypeVar

from asgiref.sync import async_to_sync
from django.contrib import admin, messages
from django.contrib.admin.utils import unquote
from django.core.exceptions import PermissionDenied
from django.db.models import QuerySet
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path, reverse
from django.utils import formats, timezone as tz
from django.utils.html import format_html
from django.utils.http import url_has_allowed_host_and_scheme

from chat_ws import promises
from chat_ws import sweep as sweeping
from chat_ws.conf import get_settings
from chat_ws.exceptions import StoreUnavailable
from chat_ws.models import ClientSession
from chat_ws.types import Question

T = TypeVar("T")

MANAGE_PERMISSION = "chat_ws.change_clientsession"  # may forget clients and cancel questions
TEXT_PREVIEW = 300  # characters of a question's text shown in the admin
CLIENT_ID_PREVIEW = 9  # characters (with the …) of a client-id shown in the session list (the whole id in its title)
USER_PREVIEW = 12  # characters (with the …) of a user name shown in the session list (the whole one in its title)
REASON_PREVIEW = 24  # characters (with the …) of a close reason shown in the session list (the whole one in its title)


def _call(func: Callable[..., Awaitable[T]], *args: Any, **kwargs: Any) -> T:
    """Run an async service from a (sync) admin view."""
    return async_to_sync(func)(*args, **kwargs)


@dataclass(frozen=True)
class QuestionRow:
    """A pending question as the admin shows it."""

    question: Question
    asked: datetime
    expires: datetime

    @property
    def text(self) -> str:
        text = self.question.text()
        return text if len(text) <= TEXT_PREVIEW else text[: TEXT_PREVIEW - 1] + "…"


def shortened(value: str, limit: int, *, wrap: bool = False) -> str:
    """Value as a span of its first limit characters (ending in …), the whole value in its title."""
    if not value:
        return ""  # the admin shows its empty-value dash
    short = value if len(value) <= limit else value[: limit - 1] + "…"
    if wrap:
        return format_html('<span title="{}">{}</span>', value, short)
    return format_html('<span class="nowrap" title="{}">{}</span>', value, short)


def moment(value: datetime | None) -> str:
    """A timestamp as ``YYYY-MM-DD HH:MM``, the time on a second line when the column is narrow."""
    if value is None:
        return ""  # the admin shows its empty-value dash
    local = tz.localtime(value) if tz.is_aware(value) else value
    return format_html(
        '<time datetime="{}" title="{}"><span class="nowrap">{}</span> <span class="nowrap">{}</span></time>',
        value.isoformat(),
        formats.localize(local),
        local.strftime("%Y-%m-%d"),
        local.strftime("%H:%M"),
    )


def pending_rows(client_id: str | None = None) -> tuple[list[QuestionRow], str | None]:
    """Pending questions, oldest first, or an error text when the store cannot be reached."""
    try:
        questions = _call(promises.pending, client_id)
    except StoreUnavailable as exc:
        return [], f"The store is unreachable: {exc}"
    return [
        QuestionRow(
            q,
            datetime.fromtimestamp(q.asked_at, tz=timezone.utc),
            datetime.fromtimestamp(q.expires_at, tz=timezone.utc),
        )
        for q in questions
    ], None


class OpenFilter(admin.SimpleListFilter):
    """Open or closed connections."""

    title = "open?"
    parameter_name = "open"

    def lookups(self, request: HttpRequest, model_admin: Any) -> list[tuple[str, str]]:
        return [("yes", "Open"), ("no", "Closed")]

    def queryset(self, request: HttpRequest, queryset: QuerySet[Any]) -> QuerySet[Any] | None:
        if self.value() == "yes":
            return queryset.filter(closed_at__isnull=True)
        if self.value() == "no":
            return queryset.filter(closed_at__isnull=False)
        return queryset


@admin.register(ClientSession)
class ClientSessionAdmin(admin.ModelAdmin):
    """Connections, newest first; nothing is editable. Pending questions on their own page."""

    # Narrow enough for 1280 px beside the navigation and filter sidebars: short ids, names and
    # reasons (whole in their titles), compact timestamps; last-seen is on the change page.
    list_display = ("client", "username", "opened", "closed", "reason", "open")
    list_filter = (OpenFilter, "close_reason", "server_id", "opened_at")
    list_select_related = ("user",)
    search_fields = ("client_id",)
    date_hierarchy = "opened_at"
    readonly_fields = [f.name for f in ClientSession._meta.fields]
    actions = ["force_disconnect", "send_alive_check"]
    change_form_template = "chat_ws/admin/clientsession_change_form.html"
    change_list_template = "chat_ws/admin/clientsession_change_list.html"

    @admin.display(description="client id", ordering="client_id")
    def client(self, obj: ClientSession) -> str:
        return shortened(obj.client_id, CLIENT_ID_PREVIEW)

    @admin.display(description="user", ordering="user__username")
    def username(self, obj: ClientSession) -> str:
        return shortened(obj.user.get_username(), USER_PREVIEW) if obj.user else ""

    @admin.display(description="opened at", ordering="opened_at")
    def opened(self, obj: ClientSession) -> str:
        return moment(obj.opened_at)

    @admin.display(description="closed at", ordering="closed_at")
    def closed(self, obj: ClientSession) -> str:
        return moment(obj.closed_at)

    @admin.display(description="close reason", ordering="close_reason")
    def reason(self, obj: ClientSession) -> str:
        return shortened(obj.close_reason, REASON_PREVIEW, wrap=True)

    @admin.display(boolean=True, description="open?")
    def open(self, obj: ClientSession) -> bool:
        return obj.is_open

    # ------------------------------------------------------------------ permissions
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_manage_permission(self, request: HttpRequest) -> bool:
        """Forget clients, send alive? checks, cancel questions: superusers and holders of
        ``chat_ws.change_clientsession`` (rows stay read-only for them too)."""
        return bool(request.user.is_active and request.user.is_staff and request.user.has_perm(MANAGE_PERMISSION))

    # ------------------------------------------------------------------ actions
    def _client_ids(self, queryset: QuerySet[Any]) -> list[str]:
        return sorted(set(queryset.values_list("client_id", flat=True)))

    @admin.action(description="Force disconnect (forget) the selected clients", permissions=["manage"])
    def force_disconnect(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        try:
            report = _call(sweeping.force, self._client_ids(queryset), reason="admin")
        except StoreUnavailable as exc:
            self.message_user(request, f"Nothing done: the store is unreachable ({exc}).", messages.ERROR)
            return
        self.message_user(
            request,
            f"Forgot {report.forced} client(s); {report.rejected} pending question(s) failed with ClientGone.",
            messages.SUCCESS,
        )

    @admin.action(description="Send an alive? check to the selected clients", permissions=["manage"])
    def send_alive_check(self, request: HttpRequest, queryset: QuerySet[Any]) -> None:
        try:
            sent = _call(sweeping.check_alive, self._client_ids(queryset))
        except StoreUnavailable as exc:
            self.message_user(request, f"Nothing sent: the store is unreachable ({exc}).", messages.ERROR)
            return
        window = get_settings()["ALIVE_RESPONSE_TIMEOUT"]
        self.message_user(
            request,
            f"Sent alive? to {sent} connected client(s); the next sweep after {window}s forgets "
            "those that did not answer.",
            messages.SUCCESS,
        )

    # ------------------------------------------------------------------ pending questions
    def get_urls(self) -> list[Any]:
        view = self.admin_site.admin_view
        return [
            path("questions/", view(self.questions_view), name="chat_ws_clientsession_questions"),
            path("questions/cancel/", view(self.cancel_view), name="chat_ws_clientsession_cancel"),
            *super().get_urls(),
        ]

    def _question_context(self, request: HttpRequest, client_id: str | None) -> dict[str, Any]:
        rows, error = pending_rows(client_id)
        return {
            "rows": rows,
            "error": error,
            "can_manage": self.has_manage_permission(request),
            "cancel_url": reverse("admin:chat_ws_clientsession_cancel", current_app=self.admin_site.name),
            "here": request.get_full_path(),
        }

    def questions_view(self, request: HttpRequest) -> HttpResponse:
        """Every pending question (or one client's), oldest first."""
        if not self.has_view_permission(request):
            raise PermissionDenied
        client_id = request.GET.get("client_id", "").strip() or None
        context = {
            **self.admin_site.each_context(request),
            **self._question_context(request, client_id),
            "opts": self.model._meta,
            "title": "Pending questions" + (f" of {client_id}" if client_id else ""),
            "client_id": client_id or "",
        }
        return TemplateResponse(request, "chat_ws/admin/pending_questions.html", context)

    def cancel_view(self, request: HttpRequest) -> HttpResponse:
        """Cancel the posted questions; their askers raise QuestionCancelled."""
        if request.method != "POST":
            return HttpResponse(status=405, headers={"Allow": "POST"})
        if not self.has_manage_permission(request):
            raise PermissionDenied
        p_keys = request.POST.getlist("p_key")
        try:
            cancelled = sum(1 for p_key in p_keys if _call(promises.cancel, p_key, "cancelled by an administrator"))
        except StoreUnavailable as exc:
            self.message_user(request, f"Nothing cancelled: the store is unreachable ({exc}).", messages.ERROR)
        else:
            gone = len(p_keys) - cancelled
            note = f" ({gone} were already settled)" if gone else ""
            self.message_user(request, f"Cancelled {cancelled} question(s){note}.", messages.SUCCESS)
        target = request.POST.get("next", "")
        if not url_has_allowed_host_and_scheme(target, {request.get_host()}, request.is_secure()):
            target = reverse("admin:chat_ws_clientsession_questions", current_app=self.admin_site.name)
        return HttpResponseRedirect(target)

    def change_view(
        self, request: HttpRequest, object_id: str, form_url: str = "", extra_context: dict[str, Any] | None = None
    ) -> HttpResponse:
        """The session's fields, then its client's pending questions and the actions."""
        extra = dict(extra_context or {})
        obj = self.get_object(request, unquote(object_id))
        if obj is not None and self.has_view_permission(request, obj):
            extra.update(self._question_context(request, obj.client_id))
            extra["session"] = obj
        return super().change_view(request, object_id, form_url, extra)
