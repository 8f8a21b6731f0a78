"""Helpers for account tests: read the sign-in link from the outbox, make TOTP codes."""

from __future__ import annotations

import re
import time
from typing import Any

from django.core import mail
from django_otp.oath import TOTP
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from tests.clock import FrozenClock

TOTP_SECRET = re.compile(r'id="totp-secret"[^>]*>(.*?)</code>', re.S)
LINK = re.compile(r"https?://[^\s\"'<>]+/login/magic/([A-Za-z0-9_-]+)/")


def last_magic_link_token(email: str | None = None) -> str:
    for message in reversed(mail.outbox):
        if email is None or email in message.to:
            match = LINK.search(str(message.body))
            if match:
                return match.group(1)
    raise AssertionError("no sign-in link was emailed")


def totp_code(key_hex_or_device: str | TOTPDevice, *, at: float | None = None) -> str:
    if isinstance(key_hex_or_device, TOTPDevice):
        key = key_hex_or_device.bin_key
    else:
        key = bytes.fromhex(key_hex_or_device)
    totp = TOTP(key, step=30, t0=0, digits=6)
    totp.time = time.time() if at is None else at
    return f"{totp.token():06d}"


def confirmed_totp(user: User) -> TOTPDevice:
    return TOTPDevice.objects.create(user=user, name="Authenticator app", confirmed=True)


def freeze_totp_clock(monkeypatch: Any, now: float) -> FrozenClock:
    """The clock django-otp's TOTP device reads (its `time` module), frozen at `now`."""
    clock = FrozenClock(now)
    monkeypatch.setattr("django_otp.plugins.otp_totp.models.time", clock)
    return clock


def totp_secret_in(html: str) -> str:
    """The base32 key of the TOTP setup page, shown in groups of four (`<span>` each)."""
    match = TOTP_SECRET.search(html)
    assert match is not None, "no #totp-secret on the page"
    secret = re.sub(r"<[^>]+>|\s", "", match.group(1))
    assert re.fullmatch(r"[A-Z2-7]+=*", secret), secret
    return secret
