"""Sign-in state kept in the server-side session.

- A *pending* sign-in: the first factor passed (magic link) for a user who has a second
  factor; the user is not authenticated until the second factor passes. Kept as the user id,
  a timestamp and where to go next, for `PENDING_MAX_AGE` seconds.
- The time of the last sign-in, stamped on every `login()` (including test clients'
  `force_login`), which factor changes require to be recent (`REAUTH_MAX_AGE`).
- Which WebAuthn challenge this browser was given, per purpose.
- When this session was last recorded as seen (its `UserSession` row, ADR 0082), so the
  row is written at most once a minute.

Nothing secret is stored here: no token, code or key.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlencode

from django.contrib.auth import login
from django.core.cache import cache
from django.http import HttpRequest
from django_otp import login as otp_login
from django_otp.models import Device

from accounts.models import User
from accounts.navigation import safe_next_url
from accounts.services import user_session_touch, user_signed_in_record
from accounts.session_store import session_key_digest

PENDING_KEY = "accounts_pending_sign_in"
SIGNED_IN_AT_KEY = "accounts_signed_in_at"
SEEN_INTERVAL = 60
PENDING_MAX_AGE = 10 * 60
REAUTH_MAX_AGE = 10 * 60
_BACKEND = "django.contrib.auth.backends.ModelBackend"


@dataclass(frozen=True)
class PendingSignIn:
    user: User
    next_url: str
    method: str


def pending_start(request: HttpRequest, *, user: User, next_url: str, method: str) -> None:
    """Remember that `user` passed the first factor; a new session id is issued."""
    request.session.cycle_key()
    request.session[PENDING_KEY] = {
        "user_id": user.pk,
        "at": int(time.time()),
        "next": safe_next_url(next_url),
        "method": method,
    }


def pending_clear(request: HttpRequest) -> None:
    request.session.pop(PENDING_KEY, None)


def pending_raw(request: HttpRequest) -> dict[str, Any] | None:
    """The pending record if present and fresh (no database query); stale ones are dropped."""
    raw = request.session.get(PENDING_KEY)
    if not isinstance(raw, dict):
        return None
    if int(time.time()) - int(raw.get("at", 0)) > PENDING_MAX_AGE:
        pending_clear(request)
        return None
    return raw


def pending_get(request: HttpRequest) -> PendingSignIn | None:
    raw = pending_raw(request)
    if raw is None:
        return None
    user_id = raw.get("user_id")
    if not isinstance(user_id, int):
        pending_clear(request)
        return None
    user = User.objects.filter(pk=user_id, is_active=True).first()
    if user is None:
        pending_clear(request)
        return None
    return PendingSignIn(
        user=user, next_url=safe_next_url(raw.get("next")), method=str(raw.get("method", ""))
    )


def complete_sign_in(
    request: HttpRequest, *, user: User, method: str, device: Device | None = None
) -> None:
    """Authenticate the session: rotate its id (login), mark the factor (django-otp), audit."""
    pending_clear(request)
    login(request, user, backend=_BACKEND)
    if device is not None:
        otp_login(request, device)
    user_signed_in_record(user=user, method=method, request=request)


def mark_verified(request: HttpRequest, device: Device) -> None:
    """A signed-in session proved a second factor (step-up): record it, new session id."""
    request.session.cycle_key()
    otp_login(request, device)
    request.session[SIGNED_IN_AT_KEY] = int(time.time())


def stamp_signed_in(request: HttpRequest) -> None:
    request.session[SIGNED_IN_AT_KEY] = int(time.time())


def recently_signed_in(request: HttpRequest) -> bool:
    at = request.session.get(SIGNED_IN_AT_KEY)
    return isinstance(at, int) and int(time.time()) - at <= REAUTH_MAX_AGE


def reauth_url(request: HttpRequest, next_url: str) -> str:
    """Where to confirm identity again before a factor change, coming back to `next_url`."""
    params = {"next": safe_next_url(next_url) or "/account/security/", "reauth": "1"}
    user = getattr(request, "user", None)
    if user is not None and user.is_authenticated:
        params["email"] = str(getattr(user, "email", ""))
    return "/login/?" + urlencode(params)


def challenge_key(purpose: str) -> str:
    return f"accounts_webauthn_{purpose}"


def seen_cache_key(digest: str) -> str:
    return f"accounts:seen:{digest}"


def session_seen(request: HttpRequest, user: User) -> None:
    """Record this signed-in session as seen, unless it was within `SEEN_INTERVAL` seconds.

    The once-a-minute mark lives in the cache, not in the session: writing it into the
    session would re-save the session row, and so push its expiry out, every minute,
    letting a session used now and then (a stolen cookie too) never expire. With the
    cache unreachable nothing is recorded.
    """
    key = request.session.session_key
    if key is None:
        return
    try:
        fresh = cache.add(seen_cache_key(session_key_digest(key)), 1, SEEN_INTERVAL)
    except Exception:  # the cache (Redis) is unreachable: the list is not worth an error
        return
    if fresh:
        user_session_touch(user=user, request=request)


def on_user_logged_in(sender: Any, request: HttpRequest | None, user: Any, **kwargs: Any) -> None:
    """`user_logged_in` receiver: remember when this session last signed in, and list it
    among the user's sessions."""
    if request is not None and hasattr(request, "session"):
        stamp_signed_in(request)
        if request.session.session_key is None:
            # login() flushed another user's session: the new key is made on save.
            request.session.save()
        session_seen(request, user)
