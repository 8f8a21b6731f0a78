"""Every dashboard page, as an owner, a member, platform staff and a visitor, at 1280 and
390 px: axe-core finds no serious or critical violation, and no page breaks the CSP."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page

from orgs.actors import Actor
from tests.e2e.dashboard import DESKTOP, PHONE, Dashboard, build_dashboard, pages, shoot, sign_in

AXE_SOURCE = (Path(__file__).parent / "vendor" / "axe.min.js").read_text()
SERIOUS = {"serious", "critical"}


@pytest.fixture(autouse=True)
def _private_media(settings: Any, tmp_path: Path) -> None:
    settings.PRIVATE_MEDIA_ROOT = tmp_path / "private"


@pytest.fixture
def dashboard(transactional_db: None) -> Dashboard:
    return build_dashboard()


def axe_violations(page: Page) -> list[dict[str, Any]]:
    """Run axe-core in the page. `evaluate` runs through DevTools, which the page's CSP
    does not govern, so nothing is loosened for the test."""
    if not page.evaluate("typeof window.axe !== 'undefined'"):
        page.evaluate(AXE_SOURCE)
    result = page.evaluate(
        "async () => (await axe.run(document, {resultTypes: ['violations']})).violations"
    )
    return [v for v in result if v["impact"] in SERIOUS]


def describe(violations: list[dict[str, Any]]) -> str:
    lines = []
    for v in violations:
        targets = [" ".join(node["target"]) for node in v["nodes"][:3]]
        lines.append(f"{v['id']} ({v['impact']}): {v['help']} at {targets}")
    return "\n    ".join(lines)


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
@pytest.mark.parametrize("role", ["owner", "member", "staff", "anonymous"])
def test_every_page_has_no_serious_axe_violation(
    browser: Browser, live_server: Any, dashboard: Dashboard, role: str, viewport: dict[str, int]
) -> None:
    users = {"owner": dashboard.owner, "member": dashboard.member, "staff": dashboard.staff}
    context = browser.new_context(base_url=live_server.url, viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    if role in users:
        sign_in(context, live_server, users[role])
    page = context.new_page()
    csp: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            csp.append(message.text)

    page.on("console", on_console)
    failures: dict[str, str] = {}
    try:
        for path in pages(dashboard, role):
            response = page.goto(path)
            status = response.status if response is not None else None
            assert status == 200, (path, status)
            shoot(page, f"{role}-{viewport['width']}-{path}")
            found = axe_violations(page)
            if found:
                failures[path] = describe(found)
    finally:
        context.close()
    assert not failures, "\n".join(f"{path}:\n    {text}" for path, text in failures.items())
    assert csp == []


# --- a key's permissions, allowlist and leak (pages tests/e2e/dashboard.py does not list) --


def key_permission_pages(d: Dashboard, role: str) -> list[str]:
    """Give the dashboard's key folded scope usage (one used, one unused, one refused), a
    report-only allowlist with outside requests, and add a flagged leaked key; return the
    pages that show them, with the edit and narrow steps for owners."""
    from django.utils import timezone

    from apikeys import redisconn, usage
    from apikeys.models import KeyUsageHour
    from apikeys.services import apikey_report_leaked, apikey_update
    from orgs.models import LeakResponse
    from tests.apikeys.helpers import make_key

    KeyUsageHour.objects.filter(api_key=d.key).update(
        scopes={"members:read": 40, "kyc:write": 2}, ip_reported=3
    )
    apikey_update(
        key=d.key,
        allowed_ips=["203.0.113.0/24", "2001:db8:85a3::/48"],
        allowed_ips_mode="report",
        actor=Actor.system(),
    )
    for ip, request_id in (("203.0.113.7", "req_in"), ("2001:db8:ffff::1234:5678", "req_out")):
        body = usage.recent_body(
            at=timezone.now().timestamp(),
            method="GET",
            path="/api/v1/members",
            ip=ip,
            client_version="billing-sdk/2.4.0",
            request_id=request_id,
        )
        conn = redisconn.client()
        if conn is None:
            usage.local_recent_push(key_pk=d.key.pk, status=200, body=body)
        else:
            conn.lpush(usage.recent_redis_key(d.key.pk), f"200 {body}")
    d.org.leak_response = LeakResponse.FLAG
    d.org.save()
    leaked, _ = make_key(d.org, name="Found on a paste site", scopes=["members:read"])
    apikey_report_leaked(key=leaked, source="github")
    o = f"/o/{d.org.slug}/api-keys"
    pages = [f"{o}/{d.key.public_id}/", f"{o}/{leaked.public_id}/"]
    if role == "owner":
        pages += [
            f"{o}/{d.key.public_id}/edit/",
            f"{o}/{d.key.public_id}/narrow/",
            f"{o}/{leaked.public_id}/edit/",
            f"/o/{d.org.slug}/settings/",
        ]
    return pages


@pytest.mark.parametrize("viewport", [DESKTOP, PHONE], ids=["1280", "390"])
@pytest.mark.parametrize("role", ["owner", "member"])
def test_key_permission_pages_have_no_serious_axe_violation(
    browser: Browser, live_server: Any, dashboard: Dashboard, role: str, viewport: dict[str, int]
) -> None:
    users = {"owner": dashboard.owner, "member": dashboard.member}
    paths = key_permission_pages(dashboard, role)
    context = browser.new_context(base_url=live_server.url, viewport=viewport)  # type: ignore[arg-type]
    context.set_default_timeout(15_000)
    sign_in(context, live_server, users[role])
    page = context.new_page()
    csp: list[str] = []

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            csp.append(message.text)

    page.on("console", on_console)
    failures: dict[str, str] = {}
    try:
        for path in paths:
            response = page.goto(path)
            status = response.status if response is not None else None
            assert status == 200, (path, status)
            # Nothing may be wider than the screen (the phone layout stacks instead).
            overflow = page.evaluate(
                "document.documentElement.scrollWidth - document.documentElement.clientWidth"
            )
            assert overflow <= 0, (path, overflow)
            shoot(page, f"{role}-{viewport['width']}-{path}")
            found = axe_violations(page)
            if found:
                failures[path] = describe(found)
    finally:
        context.close()
    assert not failures, "\n".join(f"{path}:\n    {text}" for path, text in failures.items())
    assert csp == []
