"""Browser harness: Playwright driving Debian's Chromium against pytest-django's live server.

The live server listens on http://localhost:PORT (an IP is not a valid WebAuthn RP id).
Playwright's sync API runs an event loop in this thread, so Django's async-safety guard is
lifted for the browser tests only.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import pytest

os.environ.setdefault("DJANGO_ALLOW_ASYNC_UNSAFE", "true")

from playwright.sync_api import Browser, BrowserContext, CDPSession, Page, sync_playwright

from tests.programs import CHROMIUM, require

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
    "--disable-quic",
]


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    for item in items:
        if "tests/e2e/" in str(item.fspath):
            item.add_marker(pytest.mark.e2e)


@pytest.fixture(scope="session")
def browser() -> Iterator[Browser]:
    executable = require(CHROMIUM)
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=executable, args=CHROMIUM_ARGS, headless=True)
        yield browser
        browser.close()


@pytest.fixture
def context(browser: Browser, live_server: Any) -> Iterator[BrowserContext]:
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15_000)
    yield context
    context.close()


@pytest.fixture
def page(context: BrowserContext) -> Iterator[Page]:
    page = context.new_page()
    page.csp_violations = []  # type: ignore[attr-defined]

    def on_console(message: Any) -> None:
        if "Content Security Policy" in message.text:
            page.csp_violations.append(message.text)  # type: ignore[attr-defined]

    page.on("console", on_console)
    yield page
    page.close()


class VirtualAuthenticator:
    """A CTAP2 platform authenticator inside Chromium, through the DevTools protocol."""

    def __init__(self, cdp: CDPSession, authenticator_id: str) -> None:
        self.cdp = cdp
        self.id = authenticator_id

    def credentials(self) -> list[dict[str, Any]]:
        result = self.cdp.send("WebAuthn.getCredentials", {"authenticatorId": self.id})
        return list(result["credentials"])

    def set_user_verified(self, verified: bool) -> None:
        self.cdp.send(
            "WebAuthn.setUserVerified", {"authenticatorId": self.id, "isUserVerified": verified}
        )


@pytest.fixture
def authenticator(page: Page) -> Iterator[VirtualAuthenticator]:
    cdp = page.context.new_cdp_session(page)
    cdp.send("WebAuthn.enable", {"enableUI": False})
    result = cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    yield VirtualAuthenticator(cdp, result["authenticatorId"])
    cdp.send("WebAuthn.removeVirtualAuthenticator", {"authenticatorId": result["authenticatorId"]})


def sign_in_browser(context: BrowserContext, live_server: Any, user: Any) -> None:
    """Give the browser a fully signed-in session for `user` (for tests of other journeys).

    Journeys that test sign-in itself go through /login/ instead.
    """
    from django.conf import settings
    from django.test import Client

    client = Client()
    client.force_login(user)
    cookie = client.cookies[settings.SESSION_COOKIE_NAME]
    context.add_cookies(
        [{"name": settings.SESSION_COOKIE_NAME, "value": cookie.value, "url": live_server.url}]
    )
