"""Helpers shared by the account services: errors, the security-notice email, signing
out other sessions."""

from __future__ import annotations

import secrets

from django.contrib.auth import update_session_auth_hash
from django.http import HttpRequest
from django.utils import timezone

from accounts.emails import queue_email
from accounts.models import User, UserSession
from accounts.session_store import session_key_digest, sessions_delete
from config.errors import ServiceError
from config.net import client_ip


class AccountError(ServiceError):
    """A refused account operation; `code` is stable, `message` is safe to show."""

    def __init__(self, code: str, message: str, *, param: str = "") -> None:
        super().__init__(message, code=code, param=param)


def security_notice(*, user: User, event: str, request: HttpRequest | None = None) -> None:
    """Email the user that a sign-in factor changed (never carries a secret)."""
    queue_email(
        to=[user.email],
        template="email/accounts_security_notice",
        context={
            "event": event,
            "when": timezone.now().strftime("%Y-%m-%d %H:%M UTC"),
            "ip": (client_ip(request) or "") if request is not None else "",
        },
    )


def sign_out_other_sessions(*, user: User, request: HttpRequest | None = None) -> int:
    """End every session of `user` but the one making `request` (ADR 0077, ADR 0082).

    The listed sessions are deleted now; a new stamp changes the user's session hash, which
    ends any other session (one not listed yet) on its next request. The current session
    is given the new hash. Returns how many listed sessions were deleted.
    """
    current = getattr(request, "user", None) if request is not None else None
    is_own = request is not None and current is not None and current.pk == user.pk
    key = request.session.session_key if is_own and request is not None else None
    keep = session_key_digest(key) if key else ""
    others = list(
        UserSession.objects.filter(user=user)
        .exclude(key_digest=keep)
        .values_list("key_digest", flat=True)
    )
    sessions_delete(digests=others)
    user.session_stamp = secrets.token_hex(16)
    user.save(update_fields=["session_stamp"])
    if is_own and request is not None:
        update_session_auth_hash(request, user)
    return len(others)
