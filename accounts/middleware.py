"""Second-factor enforcement: the one place that decides who must pass or enrol a factor.

1. A sign-in waiting for its second factor reaches only the second-factor page, the
   sign-in pages, sign-out and static files.
2. Platform staff reach `/platform/` and Django's admin (`/admin/`) only with a factor
   enrolled and verified in this session: without a factor they are sent to enrol, with
   one to verify it (the admin site itself also requires a verified platform owner).
3. A member of an organisation that requires two-factor is sent to enrol (no factor) or to
   verify (a factor, unverified session) before any page but their account pages.

The API (`/api/`) authenticates with keys, not sessions, and is never touched.
"""

from __future__ import annotations

from collections.abc import Callable
from urllib.parse import urlencode

from django.conf import settings
from django.contrib import messages
from django.http import HttpRequest, HttpResponse, HttpResponseRedirect

from accounts import selectors, signin
from accounts.models import User
from orgs.selectors import user_in_org_requiring_two_factor

SECOND_FACTOR_URL = "/login/2fa/"
ENROL_URL = "/account/security/"

_ALWAYS_OPEN = ("/api/", "/logout/", "/login/", "/healthz", "/favicon.ico")
_PENDING_OPEN = ("/login/", "/logout/")
# The platform console and Django's admin: staff need a factor verified this session.
_STAFF_AREAS = ("/platform/", "/admin/")


def _is_static(path: str) -> bool:
    static_url = settings.STATIC_URL or "/static/"
    return path.startswith(static_url if static_url.startswith("/") else "/" + static_url)


def _verify_url(request: HttpRequest) -> str:
    target = request.get_full_path() if request.method == "GET" else ""
    return SECOND_FACTOR_URL + ("?" + urlencode({"next": target}) if target else "")


class SecondFactorMiddleware:
    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        response = self.check(request)
        return response if response is not None else self.get_response(request)

    def check(self, request: HttpRequest) -> HttpResponse | None:
        path = request.path_info
        # API doors (the API and the gateway's forward-auth) answer keys, never sessions.
        if path.startswith(("/api/", "/gateway/")) or _is_static(path):
            return None

        if signin.pending_raw(request) is not None and not request.user.is_authenticated:
            if path.startswith(_PENDING_OPEN):
                return None
            return HttpResponseRedirect(SECOND_FACTOR_URL)

        if path.startswith(_ALWAYS_OPEN) or not request.user.is_authenticated:
            return None
        user = request.user
        assert isinstance(user, User)
        is_verified = getattr(user, "is_verified", None)
        if callable(is_verified) and is_verified():
            return None

        if path.startswith(_STAFF_AREAS) and (user.is_platform_staff or user.is_staff):
            return self._send_to_factor(
                request,
                user,
                enrol_message=(
                    "Platform staff need a second factor. Set up an authenticator app or a "
                    "passkey to open the platform console."
                ),
            )

        if path.startswith("/account/"):
            return None
        if user_in_org_requiring_two_factor(user=user):
            return self._send_to_factor(
                request,
                user,
                enrol_message=(
                    "An organisation you belong to requires two-factor authentication. Set up "
                    "an authenticator app or a passkey to continue."
                ),
            )
        return None

    def _send_to_factor(
        self, request: HttpRequest, user: User, *, enrol_message: str
    ) -> HttpResponse:
        if selectors.user_has_second_factor(user=user):
            return HttpResponseRedirect(_verify_url(request))
        messages.warning(request, enrol_message)
        return HttpResponseRedirect(ENROL_URL)


class SessionActivityMiddleware:
    """Keeps the user's list of signed-in sessions current (ADR 0082): the session of a
    signed-in request is recorded as seen (IP, browser, time), at most once a minute, so
    this costs a write a minute per session and no query otherwise."""

    def __init__(self, get_response: Callable[[HttpRequest], HttpResponse]) -> None:
        self.get_response = get_response

    def __call__(self, request: HttpRequest) -> HttpResponse:
        path = request.path_info
        if not path.startswith(("/api/", "/gateway/", "/healthz")) and not _is_static(path):
            user = request.user
            if user.is_authenticated:
                assert isinstance(user, User)
                signin.session_seen(request, user)
        return self.get_response(request)
