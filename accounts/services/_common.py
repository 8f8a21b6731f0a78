"""Helpers shared by the account services: errors, the security-notice email, signing
out other sessions."""

from __future__ import annotations

import secrets

from django.contrib.auth import update_session_auth_hash
from django.http import HttpRequest
from django.utils import timezone

from accounts.emails import queue_email
from accounts.models import User
from config.net import client_ip


class AccountError(Exception):
    """A refused account operation; `code` is stable, `message` is safe to show."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


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


def sign_out_other_sessions(*, user: User, request: HttpRequest | None = None) -> None:
    """End every session of `user` but the one making `request` (ADR 0077): a new stamp
    changes the user's session hash; the current session is given the new hash."""
    user.session_stamp = secrets.token_hex(16)
    user.save(update_fields=["session_stamp"])
    current = getattr(request, "user", None) if request is not None else None
    if request is not None and current is not None and current.pk == user.pk:
        update_session_auth_hash(request, user)
