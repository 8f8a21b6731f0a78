"""API-key dashboard pages under /o/<org_slug>/api-keys/.

Members see the list and details (masked: only the display form ever exists); owners and
admins create, rotate, revoke and delete. A new secret is rendered straight into the POST
response that created it, with `Cache-Control: no-store`, and is kept nowhere else.
"""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django import forms
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect, QueryDict
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from accounts.models import User
from apikeys.charts import Chart, build_chart
from apikeys.forms import (
    DEFAULT_GRACE_VALUE,
    GRACE_CHOICES,
    ApiKeyCreateForm,
    ApiKeyRotateForm,
    scope_grid,
)
from apikeys.models import ApiKey, KeyStatus
from apikeys.scopes import summarize
from apikeys.selectors import (
    KeyUsageSummary,
    UsageTotals,
    UsageWindow,
    apikey_get,
    apikey_history,
    apikey_list,
    apikey_successor,
    month_start,
    recent_requests,
    usage_by_key,
    usage_client_versions,
    usage_series,
    usage_totals,
    usage_window,
)
from apikeys.services import (
    ApiKeyError,
    apikey_create,
    apikey_delete,
    apikey_revoke,
    apikey_rotate,
)
from config.confirm import Confirmation, ConfirmMixin
from orgs.models import KycStatus
from orgs.tenancy import OrgMixin, OrgView

STATUS_BADGES = {
    KeyStatus.ACTIVE: "badge-success",
    KeyStatus.EXPIRING: "badge-warning",
    KeyStatus.EXPIRED: "badge",
    KeyStatus.REVOKED: "badge-danger",
}


@dataclass(frozen=True)
class KeyRow:
    key: ApiKey
    status: KeyStatus
    badge: str
    scopes: list[str]


def _row(key: ApiKey, now: datetime) -> KeyRow:
    status = key.status_at(now)
    return KeyRow(key=key, status=status, badge=STATUS_BADGES[status], scopes=summarize(key.scopes))


# A reload of the page that showed a secret re-submits the create form. The form carries a
# one-time nonce; the session remembers (hashed) nonces already used and the key each
# created, so a re-submission shows that key's masked detail page instead of a new key.
USED_NONCES_SESSION_KEY = "apikeys_used_form_nonces"
USED_NONCES_KEPT = 20


def _nonce_hash(nonce: str) -> str:
    return hashlib.sha256(nonce.encode()).hexdigest()


def _nonce_used_for(request: HttpRequest, nonce: str) -> str | None:
    if not nonce:
        return None
    used: dict[str, str] = request.session.get(USED_NONCES_SESSION_KEY, {})
    return used.get(_nonce_hash(nonce))


def _remember_nonce(request: HttpRequest, nonce: str, key_id: str) -> None:
    if not nonce:
        return
    used: dict[str, str] = dict(request.session.get(USED_NONCES_SESSION_KEY, {}))
    used[_nonce_hash(nonce)] = key_id
    request.session[USED_NONCES_SESSION_KEY] = dict(list(used.items())[-USED_NONCES_KEPT:])


def _user(request: HttpRequest) -> User:
    assert isinstance(request.user, User)
    return request.user


class ApiKeyListView(OrgView):
    required_role = "member"
    template_name = "apikeys/apikey_list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        now = timezone.now()
        context["rows"] = [_row(key, now) for key in apikey_list(org=self.org)]
        return context


@method_decorator(never_cache, name="dispatch")
class ApiKeyCreateView(OrgMixin, View):
    """GET: the form. POST: issue the key and render its secret once, in this response."""

    required_role = "admin"
    template_name = "apikeys/apikey_form.html"

    def _render_form(self, form: ApiKeyCreateForm, status: int = 200) -> HttpResponse:
        selected = set(form["scope"].value() or []) if form.is_bound else set()
        context = {
            "org": self.org,
            "membership": self.membership,
            "can_admin": True,
            "form": form,
            "grid": scope_grid(selected),
            "live_allowed": self.org.kyc_status == KycStatus.APPROVED,
            "selected_environment": form["environment"].value() or "test",
            "form_nonce": self.request.POST.get("form_nonce", "")
            if form.is_bound
            else secrets.token_urlsafe(18),
        }
        return render(self.request, self.template_name, context, status=status)

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        return self._render_form(ApiKeyCreateForm())

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        nonce = request.POST.get("form_nonce", "")[:64]
        created_id = _nonce_used_for(request, nonce)
        if created_id is not None:
            messages.info(
                request, "This key was already created. Its secret was shown once and is gone."
            )
            return HttpResponseRedirect(
                reverse("apikey-detail", kwargs={"org_slug": self.org.slug, "key_id": created_id})
            )
        form = ApiKeyCreateForm(request.POST)
        if not form.is_valid():
            return self._render_form(form, status=400)
        try:
            key, secret = apikey_create(
                org=self.org,
                name=form.cleaned_data["name"],
                environment=form.cleaned_data["environment"],
                scopes=form.cleaned_data["scope"],
                expires_at=form.cleaned_data["expires_at"],
                meta=form.cleaned_data["meta"],
                created_by=_user(request),
                request=request,
            )
        except ApiKeyError as exc:
            field = {"scopes": "scope", "expires_at": "expiry"}.get(exc.param, exc.param)
            form.add_error(field if field in form.fields else None, exc.message)
            return self._render_form(form, status=400)
        _remember_nonce(request, nonce, key.public_id)
        return render(
            request,
            "apikeys/apikey_secret.html",
            {
                "org": self.org,
                "key": key,
                "secret": secret,
                "heading": "API key created",
                "rows": [_row(key, timezone.now())],
            },
        )


class ApiKeyDetailView(OrgView):
    required_role = "member"
    template_name = "apikeys/apikey_detail.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        key = apikey_get(org=self.org, public_id=self.kwargs["key_id"])
        now = timezone.now()
        row = _row(key, now)
        window = _window(self.request, now)
        chart = build_chart(
            usage_series(
                org=self.org,
                key=key,
                since=window.since,
                until=window.until,
                granularity=window.granularity,
            ),
            window,
        )
        versions_window = usage_window("30d", now=now)
        recent = recent_requests(org=self.org, key=key, limit=RECENT_LIMIT)
        context.update(
            {
                "window": window,
                "ranges": _ranges(window),
                "chart": chart,
                # A key never used shows only the empty state. One whose first requests
                # are on record but not folded yet (at least once a minute) shows them,
                # and says the chart follows.
                "key_used": key.last_used_at is not None or not chart.empty or bool(recent),
                "empty_message": (
                    _quiet_message(window)
                    if key.last_used_at is not None
                    else "Counting: the first requests appear here within a minute"
                    if recent
                    else "No requests yet"
                ),
                "client_versions": usage_client_versions(
                    org=self.org, key=key, since=versions_window.since, until=versions_window.until
                ),
                "recent_limit": RECENT_LIMIT,
                "recent_requests": [
                    {**entry, "badge": _status_badge(entry["status"])} for entry in recent
                ],
                "key": key,
                "now": now,
                "row": row,
                "grid": scope_grid(key.scopes),
                "meta_json": json.dumps(key.meta or {}, indent=2, ensure_ascii=False),
                "history": apikey_history(org=self.org, key=key),
                "successor": apikey_successor(org=self.org, key=key),
                "can_rotate": row.status == KeyStatus.ACTIVE,
                "can_revoke": row.status != KeyStatus.REVOKED,
                "grace_choices": [(value, label) for value, label, _ in GRACE_CHOICES],
                "default_grace": DEFAULT_GRACE_VALUE,
            }
        )
        return context


# --- usage (docs/product.md#usage; ADR 0033) ----------------------------------------------

RECENT_LIMIT = 50


def _window(request: HttpRequest, now: datetime) -> UsageWindow:
    """The chart range from `?range=24h|30d`; anything else is the last 24 hours."""
    return usage_window(request.GET.get("range", ""), now=now)


def _ranges(window: UsageWindow) -> list[dict[str, Any]]:
    return [
        {"name": "24h", "label": "24 hours", "current": window.name == "24h"},
        {"name": "30d", "label": "30 days", "current": window.name == "30d"},
    ]


def _quiet_message(window: UsageWindow) -> str:
    return f"No requests in the {window.label}"


def _status_badge(status: int) -> str:
    if status >= 500:
        return "badge-danger"
    if status >= 400:
        return "badge-warning"
    return "badge-success"


@dataclass(frozen=True)
class KeyUsageRow:
    key: ApiKey | None  # None for the row that sums the deleted keys
    usage: KeyUsageSummary

    @property
    def error_rate(self) -> float:
        return (
            self.usage.errors_30d * 100 / self.usage.requests_30d if self.usage.requests_30d else 0
        )


@dataclass(frozen=True)
class Quota:
    used: int
    limit: int  # 0: unlimited

    @property
    def percent(self) -> float:
        return min(self.used * 100 / self.limit, 100.0) if self.limit else 0.0

    @property
    def level(self) -> str:
        if not self.limit:
            return "unlimited"
        if self.used >= self.limit:
            return "exhausted"
        return "high" if self.percent >= 80 else "ok"


class UsageView(OrgView):
    """The org's requests: a chart, this month against the quota, and each key's figures.
    Every member may read it (docs/product.md#organisations)."""

    required_role = "member"
    template_name = "apikeys/usage_org.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        now = timezone.now()
        window = _window(self.request, now)
        chart: Chart = build_chart(
            usage_series(
                org=self.org,
                since=window.since,
                until=window.until,
                granularity=window.granularity,
            ),
            window,
        )
        by_key = usage_by_key(org=self.org, now=now)
        keys = list(apikey_list(org=self.org))
        rows = [KeyUsageRow(key=key, usage=by_key.get(key.pk, KeyUsageSummary())) for key in keys]
        rows.sort(key=lambda r: (-r.usage.requests_30d, -r.usage.requests_24h))
        listed = {key.pk for key in keys}
        gone = [summary for pk, summary in by_key.items() if pk not in listed]
        deleted_row = None
        if gone:
            deleted_row = KeyUsageRow(
                key=None,
                usage=KeyUsageSummary(
                    requests_24h=sum(s.requests_24h for s in gone),
                    requests_30d=sum(s.requests_30d for s in gone),
                    errors_30d=sum(s.errors_30d for s in gone),
                ),
            )
        month: UsageTotals = usage_totals(
            org=self.org, since=month_start(now), until=usage_window("24h", now=now).until
        )
        seen_in_30d = any(summary.requests_30d for summary in by_key.values())
        context.update(
            {
                "window": window,
                "ranges": _ranges(window),
                "chart": chart,
                "empty_message": _quiet_message(window) if seen_in_30d else "No requests yet",
                "month": month,
                "month_start": month_start(now),
                "quota": Quota(used=month.requests, limit=self.org.limits.monthly),
                "key_rows": rows,
                "deleted_row": deleted_row,
            }
        )
        return context


def _detail_url(org_slug: str, key: ApiKey) -> str:
    return reverse("apikey-detail", kwargs={"org_slug": org_slug, "key_id": key.public_id})


class _KeyConfirmView(ConfirmMixin, OrgMixin, View):
    """An action on one key behind the confirm step (config.confirm, ADR 0081)."""

    required_role = "admin"

    def key(self) -> ApiKey:
        if not hasattr(self, "_key"):
            self._key = apikey_get(org=self.org, public_id=self.kwargs["key_id"])
        return self._key

    def detail_url(self) -> str:
        return _detail_url(self.org.slug, self.key())


@method_decorator(never_cache, name="dispatch")
class ApiKeyRotateView(_KeyConfirmView):
    """The detail page's rotate form asks first (`confirm_ask`): a rotation that keeps
    the old key working for a grace period is performed at once, one that ends it
    immediately shows the confirm step. The perform step renders the successor's secret
    once, in its response."""

    form_class = ApiKeyRotateForm

    def needs_confirmation(self, form: forms.Form | None) -> bool:
        assert isinstance(form, ApiKeyRotateForm)
        return not form.grace_delta

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        key = self.key()
        immediate = isinstance(form, ApiKeyRotateForm) and form.is_valid() and not form.grace_delta
        grace = form.cleaned_data["grace"] if form is not None and form.is_valid() else ""
        label = next((lab for v, lab, _ in GRACE_CHOICES if v == grace), "")
        return Confirmation(
            title=f"Rotate “{key.name}”{' immediately' if immediate else ''}?",
            subject=key.display,
            subject_label="Key",
            what=(
                "The current secret stops working the moment you confirm: every request "
                "still using it fails until it is replaced by the new secret."
                if immediate
                else f"A new secret is issued. The current one stops working: {label.lower()}."
                if label
                else "A new secret is issued; choose when the current one stops working."
            ),
            details=[
                "The new key keeps the name, environment and permissions.",
                "Its secret is shown once, on the next page.",
            ],
            confirm_label="Rotate and end the old key now" if immediate else "Rotate key",
            button_id="confirm-rotate",
            danger=immediate,
            cancel_url=self.detail_url(),
        )

    def get_confirm_form(self, data: QueryDict | None) -> forms.Form | None:
        form = ApiKeyRotateForm(data)
        if data is not None and form.is_valid():
            # The choice travels as a hidden value; the step shows it in words.
            form.fields["grace"].widget = forms.HiddenInput()
        return form

    def perform(self, form: forms.Form | None) -> HttpResponse:
        assert isinstance(form, ApiKeyRotateForm)
        request = self.request
        key = self.key()
        try:
            successor, secret = apikey_rotate(
                key=key, grace=form.grace_delta, actor_user=_user(request), request=request
            )
        except ApiKeyError as exc:
            messages.error(request, exc.message)
            return HttpResponseRedirect(self.detail_url())
        return render(
            request,
            "apikeys/apikey_secret.html",
            {
                "org": self.org,
                "key": successor,
                "secret": secret,
                "heading": "API key rotated",
                "predecessor": key,
                "rows": [_row(successor, timezone.now())],
            },
        )


class ApiKeyRevokeView(_KeyConfirmView):
    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        key = self.key()
        return Confirmation(
            title=f"Revoke “{key.name}”?",
            subject=key.display,
            subject_label="Key",
            what="Requests with this key fail from the moment you confirm.",
            details=["A revoked key cannot be restored; create or rotate a key to replace it."],
            confirm_label="Revoke key",
            button_id="confirm-revoke",
            cancel_url=self.detail_url(),
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        key = self.key()
        apikey_revoke(key=key, actor_user=_user(self.request), request=self.request)
        messages.success(self.request, f"“{key.name}” is revoked. Requests with it now fail.")
        return HttpResponseRedirect(self.detail_url())


class ApiKeyDeleteView(_KeyConfirmView):
    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        key = self.key()
        return Confirmation(
            title=f"Delete “{key.name}”?",
            subject=key.display,
            subject_label="Key",
            what="The key stops working at once and disappears from the key list.",
            details=["Its audit events stay in the audit log."],
            confirm_label="Delete key",
            button_id="confirm-delete",
            cancel_url=self.detail_url(),
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        key = self.key()
        apikey_delete(key=key, actor_user=_user(self.request), request=self.request)
        messages.success(self.request, f"“{key.name}” is deleted. Its audit events remain.")
        return HttpResponseRedirect(reverse("apikey-list", kwargs={"org_slug": self.org.slug}))


def api_errors_page(request: HttpRequest) -> HttpResponse:
    """`/api/docs/errors/`: every error code with its cause and fix (each error body's
    `doc_url` points at its section). Public, like the API reference."""
    from apikeys.errors import ERRORS, FIXES

    errors = [
        {
            "code": code,
            "status": spec.status,
            "type": spec.type,
            "message": spec.message,
            "fix": FIXES[code],
        }
        for code, spec in ERRORS.items()
    ]
    return render(request, "apikeys/api_errors.html", {"errors": errors})
