"""Helpers shared by the account services: errors, the security-notice email."""

from __future__ import annotations

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
