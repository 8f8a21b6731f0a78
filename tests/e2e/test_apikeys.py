"""Browser journeys for API keys: the grid, the show-once secret, the masked list."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import BrowserContext, Page, expect

from apikeys.keys import key_digest, parse_key
from apikeys.models import ApiKey
from orgs.models import Organization
from tests.apikeys.helpers import make_key
from tests.e2e.conftest import sign_in_browser


def test_admin_creates_a_key_with_the_grid_and_sees_the_secret_once(
    page: Page, context: BrowserContext, live_server: Any, org: Organization, admin_user: Any
) -> None:
    sign_in_browser(context, live_server, admin_user)
    # Before the page loads: the Clipboard API needs the permission and a focused page.
    context.grant_permissions(["clipboard-read", "clipboard-write"], origin=live_server.url)
    page.goto(f"/o/{org.slug}/api-keys/")
    page.click("#create-api-key")
    expect(page).to_have_url(f"{live_server.url}/o/{org.slug}/api-keys/new/")

    # Live is unavailable before KYC approval, and the page says why.
    expect(page.locator('select[name=environment] option[value="live"]')).to_be_disabled()
    expect(page.locator("#environment-help")).to_contain_text("KYC")
    # Read-only resources offer no Write box.
    expect(page.locator('input[name=scope][value="audit_log:write"]')).to_have_count(0)
    expect(page.locator('input[name=scope][value="usage:write"]')).to_have_count(0)

    page.fill("input[name=name]", "Billing sync")
    page.select_option("select[name=environment]", "test")
    members_read = page.locator('input[name=scope][value="members:read"]')
    members_write = page.locator('input[name=scope][value="members:write"]')
    expect(members_read).not_to_be_checked()
    members_write.check()
    expect(members_read).to_be_checked()  # ticking Write ticked Read
    expect(members_read).to_have_attribute("aria-disabled", "true")
    members_read.click(force=True)  # Read cannot be unticked while Write is ticked
    expect(members_read).to_be_checked()
    members_write.uncheck()
    members_read.uncheck()  # now it can
    expect(members_read).not_to_be_checked()
    members_write.check()
    page.locator('input[name=scope][value="usage:read"]').check()
    page.click("#create-key")

    secret_el = page.locator("#api-key-secret")
    expect(secret_el).to_be_visible()
    secret = secret_el.inner_text().strip()
    assert parse_key(secret) is not None and secret.startswith("lk_test_")
    expect(page.get_by_text("will not be shown again")).to_be_visible()
    key = ApiKey.objects.get(digest=key_digest(secret))
    assert key.scopes == ["members:read", "members:write", "usage:read"]

    # The copy button puts the secret on the clipboard.
    page.bring_to_front()
    page.click("#copy-api-key")
    expect(page.locator("#copy-api-key")).to_have_text("Copied")
    assert page.evaluate("navigator.clipboard.readText()") == secret

    # Reloading the page that showed the secret (the browser re-submits the form) shows
    # the key masked, and creates nothing new.
    page.reload()
    expect(page.locator("#api-key-secret")).to_have_count(0)
    expect(page.locator(".key-display")).to_have_text(key.display)
    assert secret not in page.content()
    assert ApiKey.objects.count() == 1

    # Leaving and coming back shows only the display form.
    page.goto(f"/o/{org.slug}/api-keys/")
    expect(page.locator(".key-display").first).to_have_text(key.display)
    assert secret not in page.content()
    expect(page.locator("#api-key-secret")).to_have_count(0)
    page.reload()
    assert secret not in page.content()
    page.click(f"text={key.name}")
    expect(page.locator("[data-scope='members:write']")).to_be_visible()
    assert secret not in page.content()
    assert page.csp_violations == []  # type: ignore[attr-defined]


def test_member_sees_the_masked_list_and_no_create_form(
    page: Page, context: BrowserContext, live_server: Any, org: Organization, member_user: Any
) -> None:
    key, secret = make_key(org, name="Read-only reports", scopes=["usage:read"])
    sign_in_browser(context, live_server, member_user)
    page.goto(f"/o/{org.slug}/api-keys/")
    expect(page.locator("tr.api-key")).to_have_count(1)
    expect(page.locator(".key-display")).to_have_text(key.display)
    expect(page.locator("#create-api-key")).to_have_count(0)
    assert secret not in page.content()
    response = page.goto(f"/o/{org.slug}/api-keys/new/")
    assert response is not None and response.status == 403
    expect(page.locator("form#api-key-form")).to_have_count(0)
    page.goto(f"/o/{org.slug}/api-keys/{key.public_id}/")
    expect(page.locator("#rotate-form")).to_have_count(0)
    expect(page.locator("#revoke-key")).to_have_count(0)
