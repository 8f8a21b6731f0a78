"""API-key dashboard pages under /o/<org_slug>/api-keys/.

Members see the list and details (masked: only the display form ever exists); owners and
admins create, edit (scopes and IP allowlist), narrow, rotate, revoke and delete. A new
secret is rendered straight into the POST response that created it, with
`Cache-Control: no-store`, and is kept nowhere else.
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

from apikeys.charts import Chart, build_chart
from apikeys.forms import (
    DEFAULT_GRACE_VALUE,
    GRACE_CHOICES,
    AllowlistForm,
    ApiKeyCreateForm,
    ApiKeyEditForm,
    ApiKeyRotateForm,
    scope_grid,
)
from apikeys.models import ApiKey, IpMode, KeyStatus
from apikeys.networks import allows, networks_of
from apikeys.scopes import summarize
from apikeys.selectors import (
    KeyUsageSummary,
    ScopeUse,
    UsageTotals,
    UsageWindow,
    apikey_get,
    apikey_history,
    apikey_page,
    apikey_scope_use,
    apikey_successor,
    apikey_usage_leaders,
    month_start,
    recent_requests,
    usage_by_key,
    usage_client_versions,
    usage_ip_reported,
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
    apikey_update,
)
from config import pager
from config.confirm import Confirmation, ConfirmMixin
from orgs.actors import Actor
from orgs.models import KycStatus
from orgs.tenancy import OrgMixin, OrgView

STATUS_BADGES = {
    KeyStatus.ACTIVE: "badge-success",
    KeyStatus.EXPIRING: "badge-warning",
    KeyStatus.LEAKED: "badge-danger",
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


# What each allowlist mode does, for the radio buttons of the create and edit forms.
IP_MODE_HELP = {
    IpMode.ENFORCE: "Refuse them (403 ip_not_allowed).",
    IpMode.REPORT: "Let them through, and count and log each one: try a list before enforcing it.",
}


def _allowlist_context(form: AllowlistForm) -> dict[str, Any]:
    """What templates/apikeys/_allowlist_fields.html needs from a create or edit form."""
    text = form["allowed_ips"].value()
    if isinstance(text, list | tuple):
        text = "\n".join(text)
    return {
        "allowed_ips_text": text or "",
        "ip_mode": form["allowed_ips_mode"].value() or IpMode.ENFORCE,
        "ip_modes": [
            (value, label, IP_MODE_HELP[IpMode(value)]) for value, label in IpMode.choices
        ],
    }


def _form_field(form: forms.Form, param: str) -> str | None:
    """The form field a service error's `param` names (None: the form as a whole)."""
    field = {"scopes": "scope", "expires_at": "expiry"}.get(param, param)
    return field if field in form.fields else None


class ApiKeyListView(OrgView):
    required_role = "member"
    template_name = "apikeys/apikey_list.html"

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context = super().get_context_data(**kwargs)
        now = timezone.now()
        before, after = pager.cursors(self.request.GET, prefix="key")
        page = apikey_page(org=self.org, before=before, after=after)
        context["rows"] = [_row(key, now) for key in page.items]
        base = reverse("apikey-list", kwargs={"org_slug": self.org.slug})
        context.update(pager.links(base, {}, page, paged=bool(before or after)))
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
            **_allowlist_context(form),
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
                allowed_ips=form.cleaned_data["allowed_ips"],
                allowed_ips_mode=form.cleaned_data["allowed_ips_mode"],
                actor=Actor.signed_in(request),
                request=request,
            )
        except ApiKeyError as exc:
            form.add_error(_form_field(form, exc.param), exc.message)
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
        month = versions_window
        scope_use = apikey_scope_use(org=self.org, key=key, since=month.since, until=month.until)
        # Only worth a query when no request needed a scope: "not used" or "used, but
        # never for anything that needs a permission" (e.g. only `GET /me`).
        used_30d = bool(scope_use.requests) or bool(
            usage_totals(org=self.org, key=key, since=month.since, until=month.until).requests
        )
        editable = self.membership.has_role("admin") and key.is_usable(now)
        # A request from outside the key's current list: refused (enforce) or counted
        # (report only). Without a list every address is allowed.
        allowed = networks_of(tuple(key.allowed_ips)) if key.allowed_ips else None
        reporting = bool(key.allowed_ips) and key.allowed_ips_mode == IpMode.REPORT
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
                    {
                        **entry,
                        "badge": _status_badge(entry["status"]),
                        "outside": allowed is not None and not allows(allowed, entry["ip"]),
                    }
                    for entry in recent
                ],
                "key": key,
                "now": now,
                "row": row,
                "meta_json": json.dumps(key.meta or {}, indent=2, ensure_ascii=False),
                "history": apikey_history(org=self.org, key=key),
                "successor": apikey_successor(org=self.org, key=key),
                "scope_use": scope_use,
                "used_30d": used_30d,
                "can_edit": editable,
                "can_narrow": editable and scope_use.can_narrow,
                "ip_mode_report": reporting,
                "ip_reported": (
                    usage_ip_reported(org=self.org, key=key, since=month.since, until=month.until)
                    if reporting
                    else None
                ),
                # A flagged leaked key still works: replacing it is the point.
                "can_rotate": row.status == KeyStatus.ACTIVE
                or (row.status == KeyStatus.LEAKED and key.rotated_at is None),
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
        keys, key_count, deleted = apikey_usage_leaders(org=self.org, used=by_key)
        rows = [KeyUsageRow(key=key, usage=by_key.get(key.pk, KeyUsageSummary())) for key in keys]
        gone = [summary for pk, summary in by_key.items() if pk in deleted]
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
                "key_count": key_count,
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
                key=key, grace=form.grace_delta, actor=Actor.signed_in(request), request=request
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
        apikey_revoke(key=key, actor=Actor.signed_in(self.request), request=self.request)
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
        apikey_delete(key=key, actor=Actor.signed_in(self.request), request=self.request)
        messages.success(self.request, f"“{key.name}” is deleted. Its audit events remain.")
        return HttpResponseRedirect(reverse("apikey-list", kwargs={"org_slug": self.org.slug}))


class ApiKeyEditView(OrgMixin, View):
    """Edit a key's permissions (the creation grid) and its IP allowlist, saved together
    through `apikey_update`; in force from the key's next request. A key that no longer
    works cannot be edited: its page says so."""

    required_role = "admin"
    template_name = "apikeys/apikey_edit.html"

    def key(self) -> ApiKey:
        if not hasattr(self, "_key"):
            self._key = apikey_get(org=self.org, public_id=self.kwargs["key_id"])
        return self._key

    def _shown_scopes(self) -> set[str]:
        """The boxes the grid ticks for the key as it is (implied and `*` scopes count)."""
        grid = scope_grid(self.key().scopes)
        return {cell.scope for row in grid.rows for cell in row.cells if cell and cell.checked}

    def _refused(self) -> HttpResponse | None:
        key = self.key()
        if key.is_usable():
            return None
        messages.error(self.request, "A revoked, expired or deleted key cannot be edited.")
        return HttpResponseRedirect(_detail_url(self.org.slug, key))

    def _render_form(self, form: ApiKeyEditForm, status: int = 200) -> HttpResponse:
        key = self.key()
        selected = set(form["scope"].value() or []) if form.is_bound else set(key.scopes)
        context = {
            "org": self.org,
            "membership": self.membership,
            "can_admin": True,
            "key": key,
            "row": _row(key, timezone.now()),
            "form": form,
            "grid": scope_grid(selected),
            **_allowlist_context(form),
        }
        return render(self.request, self.template_name, context, status=status)

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refused = self._refused()
        if refused is not None:
            return refused
        key = self.key()
        form = ApiKeyEditForm(
            initial={
                "allowed_ips": "\n".join(key.allowed_ips),
                "allowed_ips_mode": key.allowed_ips_mode,
            }
        )
        return self._render_form(form)

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        refused = self._refused()
        if refused is not None:
            return refused
        key = self.key()
        form = ApiKeyEditForm(request.POST)
        if not form.is_valid():
            return self._render_form(form, status=400)
        changes: dict[str, Any] = {
            "allowed_ips": form.cleaned_data["allowed_ips"],
            "allowed_ips_mode": form.cleaned_data["allowed_ips_mode"],
        }
        # Unchanged boxes leave the scopes as stored: saving the allowlist must not turn
        # `members:*` (which covers actions added later) into today's actions.
        ticked = set(form.cleaned_data["scope"])
        if ticked != self._shown_scopes():
            changes["scopes"] = sorted(ticked)
        before = (sorted(key.scopes), list(key.allowed_ips), key.allowed_ips_mode)
        try:
            updated = apikey_update(
                key=key, actor=Actor.signed_in(request), request=request, **changes
            )
        except ApiKeyError as exc:
            form.add_error(_form_field(form, exc.param), exc.message)
            return self._render_form(form, status=400)
        if before == (sorted(updated.scopes), list(updated.allowed_ips), updated.allowed_ips_mode):
            messages.info(request, "Nothing changed.")
        else:
            messages.success(
                request, f"“{key.name}” is updated. The change applies from its next request."
            )
        return HttpResponseRedirect(_detail_url(self.org.slug, key))


class ApiKeyNarrowView(_KeyConfirmView):
    """The Permissions card's "Narrow to what it used": the step lists what goes and what
    stays. Performing recomputes both from the folded usage of the last 30 days (nothing
    comes from the form) and keeps exactly the scopes the key's requests needed."""

    def scope_use(self) -> ScopeUse:
        window = usage_window("30d", now=timezone.now())
        return apikey_scope_use(
            org=self.org, key=self.key(), since=window.since, until=window.until
        )

    def _blocked(self, use: ScopeUse) -> str:
        if not self.key().is_usable():
            return "A revoked, expired or deleted key cannot be edited."
        if not use.used:
            return (
                "No request in the last 30 days needed a permission this key holds, so "
                "there is nothing to narrow it to."
            )
        if not use.remove:
            return "It used every permission it holds in the last 30 days: nothing to remove."
        return ""

    def get_confirmation(self, form: forms.Form | None) -> Confirmation:
        key = self.key()
        use = self.scope_use()
        removed = len(use.remove)
        return Confirmation(
            title=f"Narrow “{key.name}” to what it used?",
            subject=key.display,
            subject_label="Key",
            what=(
                "A request that needs a removed permission is refused from the moment you "
                "confirm, even if it only runs now and then (a monthly job)."
            ),
            details=[
                f"Removes: {', '.join(use.remove)}. No request needed "
                f"{'it' if removed == 1 else 'them'} in the last 30 days.",
                f"Keeps: {', '.join(use.keep)}.",
                "You can give a permission back at any time with Edit permissions.",
            ],
            confirm_label=f"Remove {removed} permission{'' if removed == 1 else 's'}",
            button_id="confirm-narrow",
            cancel_url=self.detail_url(),
            # What the step showed: performing refuses to remove more than that.
            hidden={"remove": " ".join(use.remove)},
            blocked=self._blocked(use),
        )

    def perform(self, form: forms.Form | None) -> HttpResponse:
        request = self.request
        key = self.key()
        use = self.scope_use()
        blocked = self._blocked(use)
        if blocked:
            messages.error(request, blocked)
            return HttpResponseRedirect(self.detail_url())
        shown = request.POST.get("remove")
        if shown is not None and not set(use.remove) <= set(shown.split()):
            # The 30-day window moved on between the step and the click.
            messages.warning(
                request, "Its usage changed since the last page. Check the lists again."
            )
            return self.render_confirm_step(form)
        try:
            apikey_update(key=key, scopes=use.used, actor=Actor.signed_in(request), request=request)
        except ApiKeyError as exc:
            messages.error(request, exc.message)
            return HttpResponseRedirect(self.detail_url())
        messages.success(
            request,
            f"“{key.name}” now holds only what it used: {', '.join(summarize(use.keep))}. "
            f"Removed: {', '.join(use.remove)}.",
        )
        return HttpResponseRedirect(self.detail_url())


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
