"""Browser journeys of sign-in: magic link, TOTP, passkeys (virtual authenticator),
recovery codes. The live server runs in this process: emails land in mail.outbox."""

from __future__ import annotations

import re
import time
from base64 import b32decode
from typing import Any

import pytest
from django.core import mail
from django_otp.oath import TOTP
from playwright.sync_api import Page, expect

from accounts import services
from accounts.models import PasskeyDevice, User
from tests.accounts.db_scan import find_in_database
from tests.accounts.helpers import last_magic_link_token, totp_code
from tests.e2e.conftest import VirtualAuthenticator

pytestmark = pytest.mark.django_db(transaction=True)


@pytest.fixture
def relying_party(settings: Any, live_server: Any) -> None:
    """The live server is the relying party: RP id `localhost`, its own origin."""
    settings.WEBAUTHN_RP_ID = "localhost"
    settings.WEBAUTHN_ORIGINS = [live_server.url]
    settings.SITE_URL = live_server.url


def request_link(page: Page, email: str) -> str:
    page.goto("/login/")
    page.fill('input[name="email"]', email)
    page.click("#send-magic-link")
    expect(page.locator("h1")).to_have_text("Check your email")
    return last_magic_link_token(email)


def follow_link(page: Page, token: str) -> None:
    page.goto(f"/login/magic/{token}/")
    expect(page.locator("#confirm-sign-in")).to_be_visible()
    page.click("#confirm-sign-in")
    # The page's script posts, then replaces the location: wait until it has left.
    page.wait_for_url(lambda url: "/login/magic/" not in url)
    page.wait_for_load_state()


def sign_out(page: Page) -> None:
    page.click("#sign-out")
    expect(page.locator("#current-user")).to_have_count(0)


def code_from_secret(secret: str, *, at: float) -> str:
    totp = TOTP(b32decode(secret), step=30, t0=0, digits=6)
    totp.time = at
    return f"{totp.token():06d}"


def test_sign_up_totp_passkey_and_passwordless_sign_in(
    page: Page, authenticator: VirtualAuthenticator, relying_party: None
) -> None:
    email = "journey@example.com"
    tokens: list[str] = []

    # Magic-link sign-up.
    tokens.append(request_link(page, email))
    follow_link(page, tokens[-1])
    expect(page.locator("#current-user")).to_have_text(email)

    # TOTP enrolment from the security page; recovery codes shown once.
    page.goto("/account/security/")
    page.click("#enable-totp")
    secret = page.locator("#totp-secret").inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]+=*", secret)
    expect(page.locator(".qr svg")).to_be_visible()
    page.fill('input[name="otp_token"]', code_from_secret(secret, at=time.time()))
    page.click("#confirm-totp")
    expect(page.locator(".recovery-code")).to_have_count(10)
    codes = [c.strip() for c in page.locator(".recovery-code").all_inner_texts()]
    page.click("#recovery-codes-saved")
    expect(page.locator("#totp .badge-success")).to_have_text("On")

    # Sign out, sign in again: the link alone is not enough.
    sign_out(page)
    tokens.append(request_link(page, email))
    follow_link(page, tokens[-1])
    expect(page).to_have_url(re.compile(r"/login/2fa/$"))
    expect(page.locator("#current-user")).to_have_count(0)
    page.goto("/account/security/")
    expect(page).to_have_url(re.compile(r"/login/2fa/$"))
    # The next time step: the enrolment's step cannot be replayed.
    page.fill('input[name="otp_token"]', code_from_secret(secret, at=time.time() + 30))
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("#current-user")).to_have_text(email)

    # Add a passkey through Chromium's virtual authenticator.
    page.goto("/account/security/")
    page.fill('input[name="passkey_name"]', "Virtual key")
    page.click("#add-passkey")
    expect(page.locator(".passkey")).to_have_count(1)
    expect(page.locator(".passkey")).to_contain_text("Virtual key")
    assert len(authenticator.credentials()) == 1
    assert PasskeyDevice.objects.filter(user__email=email).count() == 1

    # Passwordless passkey sign-in: no email, no code.
    sign_out(page)
    page.goto("/login/?next=/account/security/")
    page.click("#sign-in-with-passkey")
    expect(page).to_have_url(re.compile(r"/account/security/$"))
    expect(page.locator("#current-user")).to_have_text(email)
    expect(page.locator(".passkey")).to_have_count(1)

    assert page.csp_violations == []  # type: ignore[attr-defined]
    assert len(tokens) == 2 and all(any(t in m.body for m in mail.outbox) for t in tokens)
    needles = tokens + codes + [c.replace("-", "") for c in codes]
    assert find_in_database(needles) == []


def test_passkey_as_second_factor_after_the_magic_link(
    page: Page, authenticator: VirtualAuthenticator, relying_party: None
) -> None:
    email = "second@example.com"
    follow_link(page, request_link(page, email))
    page.goto("/account/security/")
    page.fill('input[name="passkey_name"]', "Laptop")
    page.click("#add-passkey")
    # First factor: the recovery codes appear on the page, once.
    expect(page.locator("#new-recovery-codes .recovery-code")).to_have_count(10)
    page.get_by_role("link", name="I've saved them").click()
    expect(page.locator(".passkey")).to_have_count(1)

    sign_out(page)
    follow_link(page, request_link(page, email))
    expect(page).to_have_url(re.compile(r"/login/2fa/$"))
    page.click("#use-passkey")
    expect(page.locator("#current-user")).to_have_text(email)
    assert page.csp_violations == []  # type: ignore[attr-defined]


def test_sign_in_with_a_recovery_code(page: Page, live_server: Any) -> None:
    user = User.objects.create_user("recover@example.com")
    device = services.totp_enrolment_start(user=user)
    codes = services.totp_enrolment_confirm(user=user, token=totp_code(device)).recovery_codes

    follow_link(page, request_link(page, user.email))
    expect(page).to_have_url(re.compile(r"/login/2fa/$"))
    page.fill('input[name="otp_token"]', codes[0])
    page.get_by_role("button", name="Verify").click()
    expect(page.locator("#current-user")).to_have_text(user.email)
    expect(page.locator(".message-warning")).to_contain_text("recovery code")

    # The same code does not work twice.
    sign_out(page)
    follow_link(page, request_link(page, user.email))
    page.fill('input[name="otp_token"]', codes[0])
    page.get_by_role("button", name="Verify").click()
    expect(page.locator(".errorlist")).to_contain_text("not valid")
    expect(page.locator("#current-user")).to_have_count(0)
