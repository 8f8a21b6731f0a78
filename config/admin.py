"""Django's admin site, reachable only by a platform owner who passed a second factor.

There is no password sign-in: the admin's login page sends people to the magic-link sign-in
(`/login/?next=…`), and `SecondFactorMiddleware` sends staff on `/admin/` to enrol or verify
a factor first, as it does for `/platform/` (ADR 0015).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import urlencode

from django.contrib import admin
from django.http import Http404, HttpRequest, HttpResponse, HttpResponseRedirect
from django.template.response import TemplateResponse
from django.urls import path

from accounts.navigation import safe_next_url


class ServiceOwnedAdmin:
    """A mixin for the admin of a model whose writes belong to its services (ADR 0075):
    rows are listed and shown, never added, changed or deleted (a POST is a 403). A write
    here would skip what the service does with it: the audit event, the invalidation of
    cached API-key verifications, the rules it checks."""

    def has_add_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False


def _guarded_shortcut(pattern: Any) -> Any:
    view = pattern.callback

    def shortcut(request: HttpRequest, content_type_id: int, object_id: str) -> HttpResponse:
        if len(object_id) > 255 or any(ord(ch) < 32 or ord(ch) == 127 for ch in object_id):
            raise Http404
        response: HttpResponse = view(request, content_type_id, object_id)
        return response

    return path(str(pattern.pattern), shortcut, name=pattern.name)


class LatchkeyAdminSite(admin.AdminSite):
    site_header = "Latchkey administration"
    site_title = "Latchkey admin"

    def has_permission(self, request: HttpRequest) -> bool:
        """An active platform owner with Django's staff flag, verified by a second factor
        in this session. Read on every request, so a demotion takes effect at once."""
        user = request.user
        if not (user.is_authenticated and user.is_active and user.is_staff):
            return False
        is_verified = getattr(user, "is_verified", None)
        return bool(
            getattr(user, "is_platform_owner", False) and callable(is_verified) and is_verified()
        )

    def login(self, request: HttpRequest, extra_context: Any = None) -> HttpResponse:
        """No password form: sign in with a magic link or a passkey, then come back."""
        next_url = safe_next_url(request.GET.get("next")) or "/admin/"
        if self.has_permission(request):
            return HttpResponseRedirect(next_url)
        if request.user.is_authenticated:
            # Signed in but not allowed (or not verified, if the middleware is bypassed):
            # the admin does not advertise itself, like the platform console (ADR 0053).
            raise Http404
        return HttpResponseRedirect("/login/?" + urlencode({"next": next_url}))

    def get_urls(self) -> list[Any]:
        """Django's own, with the view-on-site shortcut refusing an object id that no
        primary key can be (a NUL or another control character, which PostgreSQL refuses
        in text) before it reaches the database."""
        urls = super().get_urls()
        for index, pattern in enumerate(urls):
            if getattr(pattern, "name", None) == "view_on_site":
                urls[index] = _guarded_shortcut(pattern)
        return urls

    # No passwords exist, so there is none to change.
    def password_change(self, request: HttpRequest, extra_context: Any = None) -> TemplateResponse:
        raise Http404

    def password_change_done(
        self, request: HttpRequest, extra_context: Any = None
    ) -> TemplateResponse:
        raise Http404
