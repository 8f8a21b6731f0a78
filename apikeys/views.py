"""API-key dashboard pages under /o/<org_slug>/api-keys/.

Members see the list and details (masked: only the display form ever exists); owners and
admins create, rotate, revoke and delete. A new secret is rendered straight into the POST
response that created it, with `Cache-Control: no-store`, and is kept nowhere else.
"""

from __future__ import annotations

import hashlib
import secrets
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect
from django.shortcuts import render
from django.urls import reverse
from django.utils import timezone
from django.utils.decorators import method_decorator
from django.views import View
from django.views.decorators.cache import never_cache

from accounts.models import User
from apikeys.forms import (
    DEFAULT_GRACE_VALUE,
    GRACE_CHOICES,
    ApiKeyCreateForm,
    ApiKeyRotateForm,
)
from apikeys.models import ApiKey, KeyStatus
from apikeys.scopes import READ, WRITE, all_resources, summarize
from apikeys.selectors import apikey_get, apikey_history, apikey_list, apikey_successor
from apikeys.services import (
    ApiKeyError,
    apikey_create,
    apikey_delete,
    apikey_revoke,
    apikey_rotate,
)
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


def _grid(selected: set[str]) -> list[dict[str, Any]]:
    """One row per registry resource with the state of its Read and Write boxes."""
    rows = []
    for resource in all_resources():
        write_scope = f"{resource.name}:{WRITE}"
        rows.append(
            {
                "resource": resource,
                "read_scope": f"{resource.name}:{READ}",
                "write_scope": write_scope if resource.writable else None,
                "read_checked": f"{resource.name}:{READ}" in selected or write_scope in selected,
                "write_checked": resource.writable and write_scope in selected,
            }
        )
    return rows


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
            "grid": _grid(selected),
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
        row = _row(key, timezone.now())
        context.update(
            {
                "key": key,
                "row": row,
                "grid": _grid(set(key.scopes)),
                "history": apikey_history(org=self.org, key=key),
                "successor": apikey_successor(org=self.org, key=key),
                "can_rotate": row.status == KeyStatus.ACTIVE,
                "can_revoke": row.status != KeyStatus.REVOKED,
                "grace_choices": [(value, label) for value, label, _ in GRACE_CHOICES],
                "default_grace": DEFAULT_GRACE_VALUE,
            }
        )
        return context


@method_decorator(never_cache, name="dispatch")
class ApiKeyRotateView(OrgMixin, View):
    """POST only: issue the successor and render its secret once, in this response."""

    required_role = "admin"
    http_method_names = ["post"]

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = apikey_get(org=self.org, public_id=kwargs["key_id"])
        detail_url = reverse(
            "apikey-detail", kwargs={"org_slug": self.org.slug, "key_id": key.public_id}
        )
        form = ApiKeyRotateForm(request.POST)
        if not form.is_valid():
            messages.error(request, "Choose how long the old key keeps working.")
            return HttpResponseRedirect(detail_url)
        try:
            successor, secret = apikey_rotate(
                key=key, grace=form.grace_delta, actor_user=_user(request), request=request
            )
        except ApiKeyError as exc:
            messages.error(request, exc.message)
            return HttpResponseRedirect(detail_url)
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


class _ConfirmActionView(OrgMixin, View):
    """GET: a confirmation page. POST: perform the action and go back with a message."""

    required_role = "admin"
    action = ""
    template_name = "apikeys/apikey_confirm.html"

    def get(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = apikey_get(org=self.org, public_id=kwargs["key_id"])
        return render(
            request,
            self.template_name,
            {"org": self.org, "key": key, "action": self.action},
        )

    def perform(self, key: ApiKey, request: HttpRequest) -> str:
        raise NotImplementedError

    def post(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponse:
        key = apikey_get(org=self.org, public_id=kwargs["key_id"])
        return HttpResponseRedirect(self.perform(key, request))


class ApiKeyRevokeView(_ConfirmActionView):
    required_role = "admin"
    action = "revoke"

    def perform(self, key: ApiKey, request: HttpRequest) -> str:
        apikey_revoke(key=key, actor_user=_user(request), request=request)
        messages.success(request, f"“{key.name}” is revoked. Requests with it now fail.")
        return reverse("apikey-detail", kwargs={"org_slug": self.org.slug, "key_id": key.public_id})


class ApiKeyDeleteView(_ConfirmActionView):
    required_role = "admin"
    action = "delete"

    def perform(self, key: ApiKey, request: HttpRequest) -> str:
        apikey_delete(key=key, actor_user=_user(request), request=request)
        messages.success(request, f"“{key.name}” is deleted. Its audit events remain.")
        return reverse("apikey-list", kwargs={"org_slug": self.org.slug})
