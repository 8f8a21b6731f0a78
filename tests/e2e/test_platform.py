"""Browser journey for KYC and the platform console (Chromium through Playwright)."""

from __future__ import annotations

from base64 import b32decode
from pathlib import Path
from typing import Any

import pytest
from django_otp.oath import totp
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, FilePayload, Page, expect

from accounts.models import PlatformRole, User
from orgs.models import AuditEvent, KycStatus, Organization
from platform_admin.models import KycApplication
from tests.e2e.conftest import sign_in_browser
from tests.factories import UserFactory
from tests.platform_admin.conftest import pdf_bytes, png_bytes, submit, upload


@pytest.fixture(autouse=True)
def _private_media(settings: Any, tmp_path: Path) -> None:
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"


def _new_page(browser: Browser, live_server: Any) -> tuple[BrowserContext, Page]:
    context = browser.new_context(base_url=live_server.url)
    context.set_default_timeout(15_000)
    page = context.new_page()
    page.csp_violations = []  # type: ignore[attr-defined]

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            page.csp_violations.append(message.text)  # type: ignore[attr-defined]

    page.on("console", on_console)
    return context, page


def test_org_submits_kyc_and_staff_enrol_totp_then_approve_and_reject(
    browser: Browser,
    page: Page,
    context: BrowserContext,
    live_server: Any,
    org: Organization,
    other_org: Organization,
    admin_user: User,
) -> None:
    # --- an org admin submits KYC with a small PDF and a PNG -----------------------------
    sign_in_browser(context, live_server, admin_user)
    page.goto(f"/o/{org.slug}/kyc/")
    expect(page.locator("#kyc-status")).to_have_attribute("data-status", "not_submitted")
    page.fill("input[name=legal_name]", "Acme Corporation Ltd")
    page.fill("input[name=registration_number]", "RC-123456")
    page.select_option("select[name=country]", "GB")
    page.fill("textarea[name=address]", "1 High Street\nLondon EC1A 1AA")
    page.fill("input[name=director_name]", "Wile E. Coyote")
    page.set_input_files(
        "input[name=documents]",
        files=[
            FilePayload(name="incorporation.pdf", mimeType="application/pdf", buffer=pdf_bytes()),
            FilePayload(name="utility-bill.png", mimeType="image/png", buffer=png_bytes()),
        ],
    )
    page.click("#submit-kyc")
    expect(page.locator("#kyc-status")).to_have_attribute("data-status", "pending")
    expect(page.get_by_text("under review", exact=False).first).to_be_visible()
    expect(page.locator("input[name=legal_name]")).to_have_count(0)
    acme = KycApplication.objects.get(org=org)
    assert acme.documents.count() == 2
    assert page.csp_violations == []  # type: ignore[attr-defined]

    # A second org's application, submitted directly.
    globex = submit(
        other_org, None, legal_name="Globex Inc", documents=[upload("cert.pdf", pdf_bytes())]
    )

    # --- a platform admin without two-factor is kept out and sent to enrol ----------------
    staff = UserFactory.create(
        email="reviewer@latchkey.test", platform_role=PlatformRole.PLATFORM_ADMIN
    )
    staff_context, staff_page = _new_page(browser, live_server)
    try:
        sign_in_browser(staff_context, live_server, staff)
        staff_page.goto("/platform/kyc/")
        expect(staff_page).to_have_url(f"{live_server.url}/account/security/")
        expect(staff_page.locator("table.kyc-queue")).to_have_count(0)
        response = staff_page.goto(
            f"/platform/kyc/{acme.public_id}/documents/{acme.documents.first().public_id}/"  # type: ignore[union-attr]
        )
        assert response is not None and response.url.endswith("/account/security/")

        # --- enrols TOTP on /account/security/ ------------------------------------------
        staff_page.click("#enable-totp")
        secret = staff_page.locator("#totp-secret").inner_text()
        key = b32decode("".join(secret.split()).upper())
        staff_page.fill("input[name=otp_token]", f"{totp(key):06d}")
        staff_page.click("#confirm-totp")
        expect(staff_page.locator(".recovery-code").first).to_be_visible()

        # --- the queue, oldest first, then approve one ----------------------------------
        staff_page.goto("/platform/kyc/")
        rows = staff_page.locator("table.kyc-queue tbody tr")
        expect(rows).to_have_count(2)
        expect(rows.nth(0)).to_have_attribute("data-kyc-id", acme.public_id)
        rows.nth(0).get_by_role("link", name="Review").click()
        expect(staff_page.locator("h1")).to_have_text("Acme Corporation Ltd")
        expect(staff_page.locator(".kyc-documents li")).to_have_count(2)
        staff_page.click("#approve-kyc")
        # The confirm step names the org whose live keys the approval opens.
        expect(staff_page.locator("#confirm-title")).to_have_text("Approve Acme Corporation Ltd?")
        expect(staff_page.locator(".confirm-what")).to_contain_text("live API keys")
        staff_page.click("#confirm-approve-kyc")
        expect(staff_page.locator(".message-success")).to_contain_text("Approved")
        expect(staff_page.locator("table.kyc-queue tbody tr")).to_have_count(1)

        # --- and reject the other with a reason ----------------------------------------
        staff_page.locator("table.kyc-queue tbody tr").first.get_by_role(
            "link", name="Review"
        ).click()
        expect(staff_page.locator("h1")).to_have_text("Globex Inc")
        reason = "The certificate is unreadable; upload a clearer scan."
        staff_page.fill("textarea[name=reason]", reason)
        staff_page.click("#reject-kyc")
        # The confirm step carries the reason, still editable.
        expect(staff_page.locator("#confirm-title")).to_have_text("Reject Globex Inc?")
        expect(staff_page.locator("textarea[name=reason]")).to_have_value(reason)
        staff_page.click("#confirm-reject-kyc")
        expect(staff_page.locator(".message-success")).to_contain_text("Rejected")
        expect(staff_page.get_by_text("No application is waiting for review.")).to_be_visible()
        assert staff_page.csp_violations == []  # type: ignore[attr-defined]
    finally:
        staff_context.close()

    org.refresh_from_db()
    other_org.refresh_from_db()
    globex.refresh_from_db()
    assert org.kyc_status == KycStatus.APPROVED
    assert other_org.kyc_status == KycStatus.REJECTED
    assert globex.rejection_reason == reason
    assert AuditEvent.objects.get(action="kyc.approved").actor_user == staff
    assert AuditEvent.objects.get(action="kyc.rejected").actor_user == staff

    # The org admin sees the approval, read-only.
    page.goto(f"/o/{org.slug}/kyc/")
    expect(page.locator("#kyc-status")).to_have_attribute("data-status", "approved")
    expect(page.locator("#submit-kyc")).to_have_count(0)
