"""Browser journey: an admin reads the audit log, filters it and exports it as CSV."""

from __future__ import annotations

import csv
import io
import os
import re
from pathlib import Path
from typing import Any

from playwright.sync_api import BrowserContext, Page, expect

from apikeys.services import apikey_create
from orgs.actors import Actor
from orgs.models import AuditEvent, Organization
from orgs.services import audit_record, member_invite
from orgs.views import CSV_HEADER
from tests.e2e.conftest import sign_in_browser

SCREENSHOTS = os.environ.get("E2E_SCREENSHOTS", "")


def test_admin_filters_the_audit_log_and_downloads_it_as_csv(
    page: Page,
    context: BrowserContext,
    live_server: Any,
    org: Organization,
    owner: Any,
    admin_user: Any,
    tmp_path: Path,
) -> None:
    member_invite(org=org, email="bob@example.com", role="member", actor=Actor.for_user(owner))
    key, _ = apikey_create(
        actor=Actor.system(), org=org, name="CRM sync", environment="test", scopes=[]
    )
    audit_record(
        action="member.role_changed",
        org=org,
        actor=Actor.for_key(key, external_actor_id="crm-user-42"),
        target_label="carol@acme.test",
        details={"email": "carol@acme.test", "from": "member", "to": "admin"},
    )
    sign_in_browser(context, live_server, admin_user)

    page.goto(f"/o/{org.slug}/")
    expect(page.locator("#active-key-count")).to_have_text("1")
    if SCREENSHOTS:
        page.screenshot(path=f"{SCREENSHOTS}/overview.png", full_page=True)
    page.click("#audit-log-link")
    expect(page).to_have_url(f"{live_server.url}/o/{org.slug}/audit/")
    rows = page.locator("tr.audit-event")
    expect(rows).to_have_count(3)
    external = rows.filter(has_text="crm-user-42")
    expect(external).to_contain_text("API key")
    expect(external).to_contain_text("from: member · to: admin")
    if SCREENSHOTS:
        page.screenshot(path=f"{SCREENSHOTS}/audit-all.png", full_page=True)

    page.select_option("select[name=action]", "member.invited")
    page.click("#filter-audit")
    expect(page).to_have_url(re.compile(r"/audit/\?action=member\.invited&"))
    expect(rows).to_have_count(1)
    expect(rows.first).to_contain_text("bob@example.com")
    expect(rows.first).to_contain_text("owner@acme.test")
    expect(page.locator("select[name=action]")).to_have_value("member.invited")
    if SCREENSHOTS:
        page.screenshot(path=f"{SCREENSHOTS}/audit-filtered.png", full_page=True)

    with page.expect_download() as download_info:
        page.click("#export-audit-csv")
    download = download_info.value
    assert download.suggested_filename.startswith(f"audit-{org.slug}-")
    assert download.suggested_filename.endswith(".csv")
    target = tmp_path / "audit.csv"
    download.save_as(target)
    lines = list(csv.reader(io.StringIO(target.read_text(encoding="utf-8"))))
    assert lines[0] == CSV_HEADER
    assert len(lines) == 2  # only the filtered action
    event = dict(zip(CSV_HEADER, lines[1], strict=True))
    assert event["action"] == "member.invited"
    assert event["actor"] == "owner@acme.test"
    assert event["target"] == "bob@example.com"
    assert '"role": "member"' in event["details"]
    # The download itself is on record, by the admin who made it.
    exported = AuditEvent.objects.get(org=org, action="audit_log.exported")
    assert exported.actor_label == admin_user.email
    assert exported.details == {"filters": {"action": "member.invited"}}
    assert page.csp_violations == []  # type: ignore[attr-defined]
