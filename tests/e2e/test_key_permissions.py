"""Browser journey of least privilege: a key's page shows what it used beside what it
holds, and narrowing it to what it used goes through the confirm step."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from django.utils import timezone
from playwright.sync_api import BrowserContext, Page, expect

from apikeys.models import KeyUsageHour
from orgs.models import Organization
from tests.apikeys.helpers import make_key
from tests.e2e.conftest import sign_in_browser
from tests.e2e.test_pages_a11y import axe_violations, describe


def test_admin_narrows_a_key_to_the_scopes_it_used(
    page: Page, context: BrowserContext, live_server: Any, org: Organization, admin_user: Any
) -> None:
    key, _ = make_key(org, name="Billing sync", scopes=["members:read", "usage:read"])
    hour = timezone.now().replace(minute=0, second=0, microsecond=0) - timedelta(hours=2)
    # Folded usage: 42 requests that needed members:read, none that needed usage:read.
    KeyUsageHour.objects.create(
        api_key=key, org=org, hour=hour, count_2xx=42, scopes={"members:read": 42}
    )
    sign_in_browser(context, live_server, admin_user)
    detail = f"{live_server.url}/o/{org.slug}/api-keys/{key.public_id}/"
    page.goto(detail)

    held = page.locator("#scopes-held")
    expect(held.locator("[data-scope='members:read']")).to_contain_text("42 requests")
    expect(held.locator("[data-scope='usage:read']")).to_contain_text("Not used in 30 days")
    found = axe_violations(page)
    assert not found, describe(found)

    page.get_by_role("link", name="Narrow to what it used").click()
    expect(page).to_have_url(f"{detail}narrow/")
    expect(page.locator("#confirm-title")).to_contain_text("Narrow “Billing sync”")
    details = page.locator(".confirm-details")
    expect(details).to_contain_text("Removes: usage:read")
    expect(details).to_contain_text("Keeps: members:read")
    found = axe_violations(page)
    assert not found, describe(found)
    key.refresh_from_db()
    assert key.scopes == ["members:read", "usage:read"]  # the step changed nothing

    page.click("#confirm-narrow")
    expect(page).to_have_url(detail)
    expect(page.locator(".message-success")).to_contain_text("now holds only what it used")
    expect(held.locator("[data-scope]")).to_have_count(1)
    expect(held.locator("[data-scope='members:read']")).to_contain_text("42 requests")
    expect(page.locator("#narrow-key")).to_have_count(0)
    key.refresh_from_db()
    assert key.scopes == ["members:read"]
    assert page.csp_violations == []  # type: ignore[attr-defined]


def test_admin_edits_scopes_and_allowlist_in_the_browser(
    page: Page, context: BrowserContext, live_server: Any, org: Organization, admin_user: Any
) -> None:
    key, _ = make_key(org, name="Billing sync", scopes=["members:read"])
    sign_in_browser(context, live_server, admin_user)
    detail = f"{live_server.url}/o/{org.slug}/api-keys/{key.public_id}/"
    page.goto(detail)
    expect(page.locator("#allowed-ips-any")).to_contain_text("Any address")
    page.click("#edit-permissions")
    expect(page).to_have_url(f"{detail}edit/")
    expect(page.locator("input[name=scope][value='members:read']")).to_be_checked()
    # The grid's script is at work: ticking Write ticks Read.
    page.locator("input[name=scope][value='kyc:write']").check()
    expect(page.locator("input[name=scope][value='kyc:read']")).to_be_checked()
    page.get_by_label("Allowed IPs").fill("203.0.113.0/24\n10.0.0.1/8")
    page.get_by_label("Report only").check()
    page.click("#save-key")
    expect(page.locator(".error-summary")).to_contain_text("did you mean 10.0.0.0/8?")
    page.get_by_label("Allowed IPs").fill("203.0.113.0/24\n2001:db8::/32")
    page.click("#save-key")
    expect(page).to_have_url(detail)
    expect(page.locator(".message-success")).to_contain_text("is updated")
    expect(page.locator("#ip-mode")).to_have_text("Report only")
    expect(page.locator("#allowed-ips-list")).to_contain_text("2001:db8::/32")
    key.refresh_from_db()
    assert key.scopes == ["kyc:read", "kyc:write", "members:read"]
    assert key.allowed_ips == ["203.0.113.0/24", "2001:db8::/32"]
    assert key.allowed_ips_mode == "report"
    assert page.csp_violations == []  # type: ignore[attr-defined]
