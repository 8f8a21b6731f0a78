"""Browser journey: usage after real API traffic, on the key detail page, the org usage page
and the overview (a member, read-only)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from django.utils import timezone
from playwright.sync_api import BrowserContext, Page, expect

from apikeys import usage
from apikeys.models import KeyUsageHour
from apikeys.selectors import month_start, usage_totals
from orgs.models import Organization
from tests.apikeys.helpers import make_key
from tests.e2e.conftest import sign_in_browser

SCREENSHOTS = os.environ.get("E2E_SCREENSHOTS", "")


@pytest.fixture(autouse=True)
def _fresh_counters() -> Iterator[None]:
    usage.discard_local()
    usage.discard_recent_local()
    yield
    usage.discard_local()
    usage.discard_recent_local()


def shoot(page: Page, name: str) -> None:
    if SCREENSHOTS:
        page.screenshot(path=f"{SCREENSHOTS}/{name}.png", full_page=True)


def bar_sum(page: Page, attribute: str) -> int:
    values = page.locator("#key-usage-chart g.bar, #org-usage-chart g.bar").evaluate_all(
        f"bars => bars.map(b => Number(b.getAttribute('data-{attribute}')))"
    )
    return int(sum(values))


def test_member_reads_usage_after_api_traffic(
    page: Page,
    context: BrowserContext,
    live_server: Any,
    org: Organization,
    member_user: Any,
) -> None:
    key, secret = make_key(org, name="Billing sync", scopes=["members:read"])
    old, _ = make_key(org, name="Nightly export")
    # Real requests through the API pipeline: two succeed, one lacks its scope (403).
    api = context.request
    auth = {"Authorization": f"Bearer {secret}", "X-Client-Version": "billing-sdk/2.4.0"}
    for _ in range(2):
        assert api.get(f"{live_server.url}/api/v1/me", headers=auth).status == 200
    denied = api.get(f"{live_server.url}/api/v1/api-keys", headers=auth)
    assert denied.status == 403
    denied_id = denied.headers["x-request-id"]
    usage.fold()
    # Older history of the other key, written as the fold writes it: one row per hour.
    now = timezone.now()
    start = now.replace(minute=0, second=0, microsecond=0)
    KeyUsageHour.objects.bulk_create(
        KeyUsageHour(
            api_key=old,
            org=org,
            hour=start - timedelta(hours=h),
            count_2xx=20 + h % 7,
            count_4xx=h % 3,
            count_5xx=1 if h % 11 == 0 else 0,
        )
        for h in range(2, 24 * 12, 5)
    )

    sign_in_browser(context, live_server, member_user)
    page.goto(f"/o/{org.slug}/api-keys/{key.public_id}/")
    chart = page.locator("#key-usage-chart")
    expect(chart.locator("svg.usage-chart")).to_be_visible()
    expect(chart.locator("g.bar")).to_have_count(24)
    assert bar_sum(page, "requests") == 3
    assert bar_sum(page, "4xx") == 1
    expect(chart.locator('[data-total="requests"]')).to_have_text("3")
    expect(chart.locator('[data-total="2xx"]')).to_have_text("2")
    expect(chart.locator('[data-total="4xx"]')).to_have_text("1")
    expect(chart.locator(".bar-2xx")).not_to_have_count(0)
    expect(page.locator("#key-client-versions")).to_contain_text("billing-sdk/2.4.0")
    # The table alternative: open it and read the total row.
    page.click("#key-usage-chart summary")
    totals_row = chart.locator("table.usage-table tfoot td")
    expect(totals_row).to_have_text(["3", "2", "1", "0"])
    expect(chart.locator("table.usage-table tbody tr")).to_have_count(24)
    # Recent requests, newest first: the refused one on top with its request id.
    rows = page.locator("tr.recent-request")
    expect(rows).to_have_count(3)
    expect(rows.first).to_contain_text("/api/v1/api-keys")
    expect(rows.first.locator(".badge")).to_have_text("403")
    expect(rows.first.locator(".badge")).to_have_class("badge badge-warning")
    expect(rows.first).to_have_attribute("data-request-id", denied_id)
    expect(rows.nth(1)).to_contain_text("GET /api/v1/me")
    expect(rows.nth(1)).to_contain_text("billing-sdk/2.4.0")
    expect(rows.nth(1).locator(".badge")).to_have_class("badge badge-success")
    # Read-only: no key actions for a member.
    expect(page.locator("#rotate-form, #revoke-key, #delete-key")).to_have_count(0)
    shoot(page, "usage-key-detail")

    page.click(".range-option[data-range='30d']")
    expect(chart.locator("g.bar")).to_have_count(30)
    expect(page.locator(".range-option[data-range='30d']")).to_have_attribute(
        "aria-current", "true"
    )
    assert bar_sum(page, "requests") == 3

    # The org usage page: both keys, this month against the starter quota.
    page.goto(f"/o/{org.slug}/")
    expect(page.locator("#requests-24h")).to_be_visible()
    shoot(page, "usage-overview")
    page.click("#usage-link")
    expect(page).to_have_url(f"{live_server.url}/o/{org.slug}/usage/")
    org_chart = page.locator("#org-usage-chart")
    expect(org_chart.locator("g.bar")).to_have_count(24)
    day_total = bar_sum(page, "requests")
    expect(page.locator("#usage-requests")).to_have_text(f"{day_total:,}")
    month = usage_totals(org=org, since=month_start(now), until=now + timedelta(hours=1))
    expect(page.locator("#month-requests")).to_have_text(f"{month.requests:,}")
    expect(page.locator("#month-quota")).to_have_text("100,000")
    expect(page.locator("progress.quota-meter")).to_have_attribute("value", str(month.requests))
    billing = page.locator(f"tr.usage-key[data-key-id='{key.public_id}']")
    expect(billing.locator("[data-col='24h']")).to_have_text("3")
    expect(billing.locator("[data-col='errors']")).to_contain_text("1")
    nightly = page.locator(f"tr.usage-key[data-key-id='{old.public_id}']")
    expect(nightly.locator("[data-col='24h']")).to_have_text(str(day_total - 3))
    shoot(page, "usage-org-24h")
    page.click(".range-option[data-range='30d']")
    expect(org_chart.locator("g.bar")).to_have_count(30)
    thirty = KeyUsageHour.objects.filter(org=org)
    expected_30d = sum(row.requests for row in thirty)
    assert bar_sum(page, "requests") == expected_30d
    expect(page.locator("#usage-requests")).to_have_text(f"{expected_30d:,}")
    shoot(page, "usage-org-30d")
    assert page.csp_violations == []  # type: ignore[attr-defined]


def test_empty_usage_says_so(
    page: Page, context: BrowserContext, live_server: Any, org: Organization, member_user: Any
) -> None:
    key, _ = make_key(org)
    sign_in_browser(context, live_server, member_user)
    page.goto(f"/o/{org.slug}/usage/")
    expect(page.locator("#org-usage-chart")).to_contain_text("No requests yet")
    expect(page.locator("svg.usage-chart")).to_have_count(0)
    page.goto(f"/o/{org.slug}/api-keys/{key.public_id}/")
    expect(page.locator("#key-usage")).to_contain_text("No requests yet")
    shoot(page, "usage-key-empty")
    assert page.csp_violations == []  # type: ignore[attr-defined]
