"""Browser journeys for the dashboard's shell and its safeguards: the confirm step before
harm, the phone menu, "where am I" (aria-current, the org kept on account and console
pages), the permission grid's tools and the human text of lists."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from apikeys.models import ApiKey, KeyStatus
from orgs.models import Membership, OrgStatus, Role
from platform_admin.models import KycApplication
from tests.e2e.dashboard import DESKTOP, PHONE, Dashboard, build_dashboard, shoot, sign_in


@pytest.fixture(autouse=True)
def _private_media(settings: Any, tmp_path: Path) -> None:
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"


@pytest.fixture
def dashboard(transactional_db: None) -> Dashboard:
    return build_dashboard()


def _open(browser: Browser, live_server: Any, user: Any, viewport: dict[str, int]) -> Page:
    context: BrowserContext = browser.new_context(base_url=live_server.url, viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    sign_in(context, live_server, user)
    page = context.new_page()
    page.csp_violations = []  # type: ignore[attr-defined]

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            page.csp_violations.append(message.text)  # type: ignore[attr-defined]

    page.on("console", on_console)
    return page


@pytest.fixture
def owner_page(browser: Browser, live_server: Any, dashboard: Dashboard) -> Iterator[Page]:
    page = _open(browser, live_server, dashboard.owner, DESKTOP)
    yield page
    assert page.csp_violations == []  # type: ignore[attr-defined]
    page.context.close()


@pytest.fixture
def staff_page(browser: Browser, live_server: Any, dashboard: Dashboard) -> Iterator[Page]:
    page = _open(browser, live_server, dashboard.staff, DESKTOP)
    yield page
    assert page.csp_violations == []  # type: ignore[attr-defined]
    page.context.close()


# --- the confirm step ----------------------------------------------------------------------


def test_suspending_an_org_asks_first_and_refuses_an_empty_reason(
    staff_page: Page, dashboard: Dashboard
) -> None:
    org = dashboard.org
    page = staff_page
    page.goto(f"/platform/organizations/{org.public_id}/")
    page.click("#suspend-org")  # no reason typed
    # The confirm step, not a suspension: it says what happens and to whom, and asks for
    # the reason it needs.
    expect(page.locator("#confirm-title")).to_have_text("Suspend Demo Inc.?")
    expect(page.locator(".confirm-subject")).to_contain_text("Demo Inc. (demo)")
    expect(page.locator(".confirm-what")).to_contain_text("refuses every key")
    expect(page.locator(".error-summary")).to_contain_text("Give the reason for the suspension.")
    org.refresh_from_db()
    assert org.status == OrgStatus.ACTIVE
    # Confirming with the reason still empty (whitespace only) is refused by the server.
    page.fill("textarea[name=reason]", "   ")
    page.click("#confirm-suspend-org")
    expect(page.locator(".error-summary")).to_be_visible()
    expect(page.locator("#id_reason_error")).to_contain_text("Give the reason")
    org.refresh_from_db()
    assert org.status == OrgStatus.ACTIVE
    # Cancel goes back without a change.
    page.click("#confirm-cancel")
    expect(page).to_have_url(
        f"{page.url.split('/platform/')[0]}/platform/organizations/{org.public_id}/"
    )
    # With a reason it suspends.
    page.fill("#id_reason", "Chargebacks under investigation")
    page.click("#suspend-org")
    expect(page.locator("textarea[name=reason]")).to_have_value("Chargebacks under investigation")
    page.click("#confirm-suspend-org")
    expect(page.locator(".message-success")).to_contain_text("is suspended")
    org.refresh_from_db()
    assert org.status == OrgStatus.SUSPENDED


def test_make_owner_and_transfer_ownership_ask_first(
    owner_page: Page, dashboard: Dashboard
) -> None:
    page = owner_page
    target = dashboard.member_membership
    page.goto(f"/o/{dashboard.org.slug}/members/")
    row = page.locator(f"tr[data-member-id='{target.public_id}']")
    row.locator("button[data-role=owner]").click()
    expect(page.locator("#confirm-title")).to_have_text("Make member@demo.latchkey.test an owner?")
    expect(page.locator(".confirm-what")).to_contain_text("deleting the organisation")
    target.refresh_from_db()
    assert target.role == Role.MEMBER
    page.click("#confirm-role")
    expect(page.locator(".message-success")).to_contain_text("is now owner")
    target.refresh_from_db()
    assert target.role == Role.OWNER

    # Transferring ownership names the new owner and what the owner becomes.
    staff_membership = Membership.objects.get(org=dashboard.org, user=dashboard.staff)
    page.goto(f"/o/{dashboard.org.slug}/settings/")
    page.select_option("#transfer-to", staff_membership.public_id)
    page.click("#transfer-ownership")
    expect(page.locator("#confirm-title")).to_have_text(
        "Transfer ownership of Demo Inc. to staff@latchkey.test?"
    )
    expect(page.locator(".confirm-what")).to_contain_text("You become an admin")
    staff_membership.refresh_from_db()
    assert staff_membership.role == Role.ADMIN
    page.click("#confirm-transfer")
    expect(page.locator(".message-success")).to_contain_text("is now the owner")
    staff_membership.refresh_from_db()
    assert staff_membership.role == Role.OWNER


def test_rotating_immediately_asks_first_and_the_two_keys_link_each_other(
    owner_page: Page, dashboard: Dashboard
) -> None:
    page = owner_page
    key = dashboard.key
    page.goto(f"/o/{dashboard.org.slug}/api-keys/{key.public_id}/")
    page.select_option("#id_grace", "0")
    page.click("#rotate-key")
    expect(page.locator("#confirm-title")).to_have_text("Rotate “Billing sync” immediately?")
    expect(page.locator(".confirm-what")).to_contain_text("stops working the moment you confirm")
    expect(page.locator(".confirm-subject")).to_contain_text(key.display)
    assert ApiKey.objects.filter(predecessor=key).count() == 0
    page.click("#confirm-rotate")
    expect(page.locator("#api-key-secret")).to_be_visible()
    successor = ApiKey.objects.get(predecessor=key)
    key.refresh_from_db()
    assert key.status_at(successor.created_at) != KeyStatus.ACTIVE
    # The new key's page says where it came from; the old key's page, what replaced it.
    page.click("text=I have copied the key")
    expect(page.locator("#rotated-from-link")).to_contain_text(key.display)
    page.click("#rotated-from-link")
    expect(page.locator("#replaced-by-link")).to_contain_text(successor.display)

    # With a grace period the rotation needs no extra step: the old key keeps working.
    page.goto(f"/o/{dashboard.org.slug}/api-keys/{successor.public_id}/")
    page.select_option("#id_grace", "3600")
    page.click("#rotate-key")
    expect(page.locator("#api-key-secret")).to_be_visible()


def test_staff_revocations_and_kyc_decisions_ask_first(
    staff_page: Page, dashboard: Dashboard
) -> None:
    page = staff_page
    # A system key.
    page.goto("/platform/system-keys/")
    page.locator(f"tr[data-key-id='{dashboard.system_key.public_id}'] .revoke-key").click()
    expect(page.locator("#confirm-title")).to_have_text("Revoke the system key “Back office”?")
    dashboard.system_key.refresh_from_db()
    assert dashboard.system_key.revoked_at is None
    page.click("#confirm-revoke-system-key")
    expect(page.locator(".message-success")).to_contain_text("is revoked")
    dashboard.system_key.refresh_from_db()
    assert dashboard.system_key.revoked_at is not None

    # A platform admin.
    from tests.factories import UserFactory

    UserFactory.create(email="reviewer@latchkey.test", platform_role="platform_admin")
    page.goto("/platform/admins/")
    page.locator("tr[data-email='reviewer@latchkey.test'] .revoke-role").click()
    expect(page.locator("#confirm-title")).to_contain_text("reviewer@latchkey.test")
    expect(page.locator(".confirm-what")).to_contain_text("lose the platform console")
    page.click("#confirm-revoke-role")
    expect(page.locator(".message-success")).to_contain_text("no longer platform staff")

    # Approving KYC.
    page.goto(f"/platform/kyc/{dashboard.pending_kyc.public_id}/")
    page.click("#approve-kyc")
    expect(page.locator("#confirm-title")).to_have_text("Approve Globex Inc?")
    dashboard.pending_kyc.refresh_from_db()
    assert dashboard.pending_kyc.is_pending
    page.click("#confirm-cancel")
    expect(page.locator("#approve-kyc")).to_be_visible()
    assert KycApplication.objects.get(pk=dashboard.pending_kyc.pk).is_pending


# --- the shell ---------------------------------------------------------------------------


def test_phone_header_is_short_and_its_menu_opens_and_closes(
    browser: Browser, live_server: Any, dashboard: Dashboard
) -> None:
    page = _open(browser, live_server, dashboard.staff, PHONE)
    try:
        page.goto(f"/o/{dashboard.org.slug}/api-keys/")
        header = page.locator("header.topbar")
        box = header.bounding_box()
        assert box is not None and box["height"] <= 120, box
        nav_link = page.locator(".topnav a", has_text="Members")
        button = page.locator("#menu-button")
        expect(button).to_be_visible()
        expect(button).to_have_attribute("aria-expanded", "false")
        expect(nav_link).to_be_hidden()
        button.click()
        expect(button).to_have_attribute("aria-expanded", "true")
        expect(nav_link).to_be_visible()
        expect(page.locator("#org-switcher-select")).to_be_visible()
        expect(page.locator("#sign-out")).to_be_visible()
        shoot(page, "phone-menu-open")
        # Opening the menu does not make the header itself taller (the menu overlays).
        box = header.bounding_box()
        assert box is not None and box["height"] <= 120, box
        page.keyboard.press("Escape")
        expect(nav_link).to_be_hidden()
        expect(button).to_have_attribute("aria-expanded", "false")
        # Tables become labelled blocks: no key column hides behind a horizontal scroll.
        wrap = page.locator(".table-wrap").first
        overflow = wrap.evaluate("el => el.scrollWidth - el.clientWidth")
        assert overflow <= 1
        expect(page.locator("tr.api-key td[data-label=Key]").first).to_be_visible()
        # The menu opens there too and leads to the page.
        button.click()
        nav_link.click()
        expect(page).to_have_url(f"{live_server.url}/o/{dashboard.org.slug}/members/")
        # The usage chart's axis labels are drawn at a readable size on a phone.
        page.goto(f"/o/{dashboard.org.slug}/usage/")
        heights = page.locator("#org-usage-chart svg text").evaluate_all(
            "els => els.map(el => el.getBoundingClientRect().height)"
        )
        assert heights and min(heights) >= 9, heights
        assert page.csp_violations == []  # type: ignore[attr-defined]
    finally:
        page.context.close()


def test_the_current_page_is_marked_and_the_org_is_kept_off_org_pages(
    staff_page: Page, dashboard: Dashboard
) -> None:
    page = staff_page
    slug = dashboard.org.slug
    page.goto(f"/o/{slug}/api-keys/")
    current = page.locator(".topnav a[aria-current=page]")
    expect(current).to_have_count(1)
    expect(current).to_have_text("API keys")
    # Visibly different from the other links.
    other = page.locator(".topnav a", has_text="Usage")
    assert current.evaluate("el => getComputedStyle(el).backgroundColor") != other.evaluate(
        "el => getComputedStyle(el).backgroundColor"
    )
    page.goto(f"/o/{slug}/")
    expect(page.locator(".topnav a[aria-current=page]")).to_have_text("Overview")
    # The account page keeps the org (the switcher and the org's links) and marks itself.
    page.goto("/account/security/")
    expect(page.locator("#org-switcher-select")).to_have_value(slug)
    expect(page.locator(".topnav a", has_text="API keys")).to_have_attribute(
        "href", f"/o/{slug}/api-keys/"
    )
    expect(page.locator(".account-link")).to_have_attribute("aria-current", "page")
    expect(page.locator(".topnav a[aria-current=page]")).to_have_count(0)
    # So does the platform console.
    page.goto("/platform/organizations/")
    expect(page.locator("#org-switcher-select")).to_have_value(slug)
    expect(page.locator(".topnav a[aria-current=page]")).to_have_text("Platform")
    # At 1280 px the whole navigation of staff inside an org is one row.
    page.goto(f"/o/{slug}/members/")
    tops = page.locator(".topbar .topnav a, .topbar .account-link, #sign-out").evaluate_all(
        "els => els.map(el => { const r = el.getBoundingClientRect(); "
        "return Math.round(r.top + r.height / 2); })"
    )
    assert len(tops) == 10 and max(tops) - min(tops) <= 4, tops
    header = page.locator("header.topbar").bounding_box()
    assert header is not None and header["height"] <= 64


def test_grid_column_toggle_and_expiry_date_only_for_a_date(
    owner_page: Page, dashboard: Dashboard
) -> None:
    page = owner_page
    page.goto(f"/o/{dashboard.org.slug}/api-keys/new/")
    # The date input shows only for "On a date…".
    expect(page.locator("#id_expires_on")).to_be_hidden()
    page.select_option("#id_expiry", "custom")
    expect(page.locator("#id_expires_on")).to_be_visible()
    page.select_option("#id_expiry", "30")
    expect(page.locator("#id_expires_on")).to_be_hidden()
    # "All read" ticks read for every resource, and again unticks them.
    reads = page.locator("td[data-action=read] input[name=scope]")
    count = reads.count()
    assert count >= 5
    page.click("button[data-select-column=read]")
    for index in range(count):
        expect(reads.nth(index)).to_be_checked()
    expect(page.locator("button[data-select-column=read]")).to_have_attribute(
        "aria-pressed", "true"
    )
    page.click("button[data-select-column=read]")
    for index in range(count):
        expect(reads.nth(index)).not_to_be_checked()
    # A preset from the catalogue sets the grid and shows as pressed.
    page.click("[data-preset=read_only]")
    expect(page.locator("[data-preset=read_only]")).to_have_attribute("aria-pressed", "true")
    expect(page.locator("input[value='members:read']")).to_be_checked()
    expect(page.locator("input[value='members:write']")).not_to_be_checked()
    # An invalid form starts with an error summary that links to the field.
    page.click("#create-key")
    summary = page.locator(".error-summary")
    expect(summary).to_be_visible()
    expect(summary.locator("a[href='#id_name']")).to_be_visible()


def test_lists_speak_in_sentences_and_format_numbers(
    browser: Browser, live_server: Any, dashboard: Dashboard
) -> None:
    page = _open(browser, live_server, dashboard.member, DESKTOP)
    try:
        page.goto(f"/o/{dashboard.org.slug}/")
        activity = page.locator("table.recent-activity")
        sentence = activity.locator("[data-action='api_key.rotated']").first
        expect(sentence).to_have_text("Rotated an API key")
        expect(sentence).to_have_attribute("title", "api_key.rotated")
        expect(page.get_by_text("100,000 a month")).to_be_visible()
        # A read-only member is offered to view, not to manage.
        expect(page.get_by_role("link", name="View members →")).to_be_visible()
        expect(page.get_by_text("Manage members")).to_have_count(0)
    finally:
        page.context.close()
