"""The tenancy machinery: every org dashboard page is served through `OrgMixin`.

The org is resolved once from the URL (`/o/<org_slug>/...`) together with the signed-in
user's membership, before any view code runs. Absent and not-yours orgs give the same 404;
a role below the view's `required_role` gives 403. A view that does not declare
`required_role` cannot be served (ADR 0002).
"""

from __future__ import annotations

from typing import Any, ClassVar

from django.contrib.auth.mixins import LoginRequiredMixin
from django.core.exceptions import ImproperlyConfigured, PermissionDenied
from django.http import HttpRequest, HttpResponseBase
from django.views.generic import TemplateView

from orgs.models import ROLE_RANK, Membership, Organization
from orgs.selectors import membership_get_for_slug

SELECTED_ORG_COOKIE = "latchkey_org"
SELECTED_ORG_COOKIE_AGE = 60 * 60 * 24 * 365


class OrgMixin(LoginRequiredMixin):
    """Resolve `self.org` / `self.membership` from the URL and enforce `required_role`."""

    required_role: ClassVar[str | None] = None
    org: Organization
    membership: Membership

    def dispatch(self, request: HttpRequest, *args: Any, **kwargs: Any) -> HttpResponseBase:
        if self.required_role not in ROLE_RANK:
            raise ImproperlyConfigured(
                f"{type(self).__name__} must declare required_role (owner, admin or member)."
            )
        if not request.user.is_authenticated:
            return self.handle_no_permission()
        org_slug = kwargs.pop("org_slug")
        self.membership = membership_get_for_slug(user=request.user, org_slug=org_slug)
        self.org = self.membership.org
        request.org = self.org  # type: ignore[attr-defined]
        request.membership = self.membership  # type: ignore[attr-defined]
        if not self.membership.has_role(self.required_role):
            raise PermissionDenied("Your role does not allow this page.")
        response = super().dispatch(request, *args, **kwargs)
        if request.COOKIES.get(SELECTED_ORG_COOKIE) != self.org.slug:
            response.set_cookie(
                SELECTED_ORG_COOKIE,
                self.org.slug,
                max_age=SELECTED_ORG_COOKIE_AGE,
                httponly=True,
                samesite="Lax",
                secure=request.is_secure(),
            )
        return response

    def get_context_data(self, **kwargs: Any) -> dict[str, Any]:
        context: dict[str, Any] = super().get_context_data(**kwargs)  # type: ignore[misc]
        context["org"] = self.org
        context["membership"] = self.membership
        context["can_admin"] = self.membership.has_role("admin")
        context["is_owner"] = self.membership.has_role("owner")
        return context


class OrgView(OrgMixin, TemplateView):
    """Base for an org page that renders a template."""
