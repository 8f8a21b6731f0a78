from __future__ import annotations

from typing import Any

from playwright.sync_api import Page, expect

from tests.e2e.conftest import VirtualAuthenticator


def test_home_page_renders_in_chromium_without_csp_violations(page: Page, live_server: Any) -> None:
    response = page.goto("/")
    assert response is not None and response.status == 200
    assert live_server.url.startswith("http://localhost:")
    expect(page.locator("h1")).to_have_text("Access, handled.")
    # The stylesheet is served by our own origin and applied.
    bg = page.evaluate("getComputedStyle(document.body).backgroundColor")
    assert bg == "rgb(247, 248, 250)"
    assert page.csp_violations == []  # type: ignore[attr-defined]


def test_virtual_authenticator_is_available_to_pages(
    page: Page, authenticator: VirtualAuthenticator
) -> None:
    page.goto("/")
    available = page.evaluate("PublicKeyCredential.isUserVerifyingPlatformAuthenticatorAvailable()")
    assert available is True
    assert authenticator.credentials() == []
