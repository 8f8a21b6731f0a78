"""Browser journeys of /account/security/: the signed-in sessions list (two browsers of one
user, one signs the other out), the security log, and keeping recovery codes and the
authenticator key (copy, download). The live server runs in this process."""

from __future__ import annotations

import re
import time
from base64 import b32decode
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django_otp.oath import TOTP
from playwright.sync_api import Browser, BrowserContext, Page, expect

from accounts.models import User, UserSession
from tests.accounts.helpers import last_magic_link_token

pytestmark = pytest.mark.django_db(transaction=True)

FIREFOX_UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"


@pytest.fixture(autouse=True)
def site(settings: Any, live_server: Any) -> None:
    settings.SITE_URL = live_server.url


@pytest.fixture
def second_context(browser: Browser, live_server: Any) -> Iterator[BrowserContext]:
    """Another browser (its own cookies), which says it is Firefox on Windows."""
    context = browser.new_context(base_url=live_server.url, user_agent=FIREFOX_UA)
    context.set_default_timeout(15_000)
    yield context
    context.close()


def watch_csp(page: Page) -> list[str]:
    violations: list[str] = []
    page.on(
        "console",
        lambda message: (
            violations.append(message.text) if "Content Security Policy" in message.text else None
        ),
    )
    return violations


def sign_in(page: Page, email: str) -> None:
    page.goto("/login/")
    page.fill('input[name="email"]', email)
    page.click("#send-magic-link")
    expect(page.locator("h1")).to_have_text("Check your email")
    page.goto(f"/login/magic/{last_magic_link_token(email)}/")
    page.click("#confirm-sign-in")
    page.wait_for_url(lambda url: "/login/magic/" not in url)
    expect(page.locator("#current-user")).to_have_text(email)


def code_from_secret(secret: str, *, at: float) -> str:
    totp = TOTP(b32decode(secret), step=30, t0=0, digits=6)
    totp.time = at
    return f"{totp.token():06d}"


def test_a_browser_signs_out_another_session_of_the_same_user(
    page: Page, second_context: BrowserContext
) -> None:
    email = "two-browsers@example.com"
    User.objects.create_user(email)
    other = second_context.new_page()
    csp = watch_csp(page) + watch_csp(other)
    sign_in(page, email)
    sign_in(other, email)

    page.goto("/account/security/")
    sessions = page.locator("#sessions .session")
    expect(sessions).to_have_count(2)
    current = page.locator("#sessions .session-current")
    expect(current).to_have_count(1)
    expect(current).to_contain_text("This browser")
    expect(current.locator(".sign-out-session")).to_have_count(0)
    firefox = page.locator("#sessions .session:not(.session-current)")
    expect(firefox).to_contain_text("Firefox on Windows")
    expect(firefox).to_contain_text("127.0.0.1")

    # The other browser sees the same two sessions, itself marked.
    other.goto("/account/security/")
    expect(other.locator("#sessions .session-current")).to_contain_text("Firefox on Windows")

    firefox.locator(".sign-out-session").click()
    expect(page.locator(".message-success")).to_contain_text(
        "The session on Firefox on Windows was signed out."
    )
    expect(page.locator("#sessions .session")).to_have_count(1)
    expect(page.locator("#sign-out-other-sessions")).to_have_count(0)

    # The second browser is signed out on its next request.
    other.reload()
    expect(other).to_have_url(re.compile(r"/login/\?next=/account/security/"))
    expect(other.locator("#current-user")).to_have_count(0)
    assert UserSession.objects.filter(user__email=email).count() == 1

    # The security log shows both sign-ins and the sign-out of the other session.
    page.goto("/account/security/#security-log")
    log = page.locator("#security-log .security-event")
    expect(log.first).to_contain_text("Another session signed out")
    expect(page.locator('#security-log [data-action="user.signed_in"]')).to_have_count(2)
    assert csp == []


def test_sign_out_all_other_sessions(page: Page, second_context: BrowserContext) -> None:
    email = "everywhere@example.com"
    User.objects.create_user(email)
    other = second_context.new_page()
    sign_in(page, email)
    sign_in(other, email)

    page.goto("/account/security/")
    page.click("#sign-out-other-sessions")
    expect(page.locator(".message-success")).to_contain_text("Signed out 1 other session.")
    expect(page.locator("#sessions .session")).to_have_count(1)
    expect(page.locator("#current-user")).to_have_text(email)

    other.goto("/account/security/")
    expect(other.locator("#current-user")).to_have_count(0)


def test_copy_and_download_recovery_codes_and_copy_the_authenticator_key(
    page: Page, context: BrowserContext, live_server: Any, tmp_path: Path
) -> None:
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    email = "keeper@example.com"
    User.objects.create_user(email)
    sign_in(page, email)

    page.goto("/account/security/")
    page.click("#enable-totp")
    key = page.locator("#totp-secret")
    secret = key.inner_text().strip()
    assert re.fullmatch(r"[A-Z2-7]{32}", secret), secret
    expect(key.locator("span")).to_have_count(8)  # shown as eight groups of four
    groups = key.locator("span").all_inner_texts()
    assert all(len(group) == 4 for group in groups) and "".join(groups) == secret
    page.click("#copy-totp-secret")
    expect(page.locator("#copy-totp-secret")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    page.fill('input[name="otp_token"]', code_from_secret(secret, at=time.time()))
    page.click("#confirm-totp")
    expect(page.locator(".recovery-code")).to_have_count(10)
    codes = [c.strip() for c in page.locator(".recovery-code").all_inner_texts()]

    page.click("#copy-recovery-codes")
    expect(page.locator("#copy-recovery-codes")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()").split() == codes

    with page.expect_download() as info:
        page.click("#download-recovery-codes")
    download = info.value
    assert download.suggested_filename == "latchkey-recovery-codes.txt"
    assert download.url.startswith("blob:")  # made in the browser: no request, no URL
    saved = tmp_path / download.suggested_filename
    download.save_as(saved)
    text = saved.read_text()
    assert [line for line in text.splitlines() if line in codes] == codes
    assert f"Account: {email}" in text
    expect(page.locator(".codes-actions [data-copy-status]")).to_contain_text(
        "latchkey-recovery-codes.txt"
    )

    # Removing the app asks first, saying what happens; Cancel changes nothing.
    page.click("#recovery-codes-saved")
    page.click("#disable-totp")
    expect(page.locator("h1")).to_have_text("Remove the authenticator app?")
    expect(page.locator(".confirm-step")).to_contain_text("two-factor sign-in turns off")
    page.click("#confirm-cancel")
    expect(page.locator("#totp .badge-success")).to_have_text("On")
    page.click("#disable-totp")
    page.click("#confirm-disable-totp")
    expect(page.locator(".message-success")).to_contain_text("The authenticator app was removed.")
    expect(page.locator("#enable-totp")).to_be_visible()
    assert page.csp_violations == []  # type: ignore[attr-defined]
