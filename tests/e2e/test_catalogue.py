"""Browser journey: an operator's catalogue drives the grid, its presets and the key."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from django.test import override_settings
from playwright.sync_api import BrowserContext, Page, expect

from apikeys.keys import key_digest
from apikeys.models import ApiKey
from orgs.models import Organization
from tests.apikeys.api.conftest import ApiClient
from tests.e2e.conftest import sign_in_browser

PRODUCT = Path(__file__).resolve().parents[1] / "apikeys" / "catalogues" / "product.toml"


@pytest.fixture
def product() -> Iterator[None]:
    with override_settings(LATCHKEY_CATALOGUE=str(PRODUCT)):
        yield


def boxes(page: Page) -> Any:
    return page.locator("[data-scope-grid] input[name=scope]")


def test_a_crud_resource_gets_its_columns_presets_tick_and_the_key_holds_them(
    product: None,
    page: Page,
    context: BrowserContext,
    live_server: Any,
    org: Organization,
    admin_user: Any,
) -> None:
    sign_in_browser(context, live_server, admin_user)
    page.goto(f"/o/{org.slug}/api-keys/new/")

    # A column per action some resource has; cells only where the resource has it.
    headers = [t.strip() for t in page.locator("[data-scope-grid] thead th").all_text_contents()]
    assert headers == ["Resource", "Read", "Write", "Create", "Update", "Delete", "Execute"]
    invoices = page.locator("[data-scope-grid] tr[data-resource=invoices]")
    expect(invoices.locator("input[name=scope]")).to_have_count(5)
    expect(page.locator('input[value="invoices:write"]')).to_have_count(0)
    expect(page.locator('input[value="checkout:read"]')).to_have_count(0)
    expect(page.locator('input[value="checkout:write"]')).to_have_count(1)
    expect(page.locator('input[value="finance:write"]')).to_have_count(0)
    expect(page.locator("tr[data-resource=tenants]")).to_have_count(0)  # a system resource

    # Implications as declared: execute ticks update, which ticks read.
    page.check('input[value="invoices:execute"]')
    expect(page.locator('input[value="invoices:update"]')).to_be_checked()
    expect(page.locator('input[value="invoices:read"]')).to_be_checked()
    expect(page.locator('input[value="invoices:create"]')).not_to_be_checked()
    page.locator('input[value="invoices:read"]').click(force=True)
    expect(page.locator('input[value="invoices:read"]')).to_be_checked()

    # Presets set the grid to their scopes.
    page.click("[data-preset=read_only]")
    checked = [b.get_attribute("value") for b in boxes(page).all() if b.is_checked()]
    assert checked and all(value.endswith(":read") for value in checked)
    assert "payments:read" in checked and "finance:read" in checked
    page.click("[data-preset=billing]")
    billing = {b.get_attribute("value") for b in boxes(page).all() if b.is_checked()}
    assert billing == {
        "payments:read",
        "invoices:create",
        "invoices:read",
        "invoices:update",
        "invoices:delete",
        "invoices:execute",
    }
    page.click("[data-preset=full_access]")
    assert all(b.is_checked() for b in boxes(page).all())

    # The journey of a new user: Payments → Write, and the key holds it.
    page.reload()
    assert not any(b.is_checked() for b in boxes(page).all())
    page.fill("input[name=name]", "Payments service")
    page.check('input[value="payments:write"]')
    expect(page.locator('input[value="payments:read"]')).to_be_checked()
    page.fill("textarea[name=meta]", '{"tenant": "t_42"}')
    page.click("#create-key")
    secret = page.locator("#api-key-secret").inner_text().strip()
    assert secret.startswith("pfk_sandbox_")
    key = ApiKey.objects.get(digest=key_digest(secret))
    assert key.scopes == ["payments:read", "payments:write"]
    assert key.meta == {"tenant": "t_42"}
    me = ApiClient(**{"X-Product-Key": secret}).get("me").json()
    assert me["key"]["scopes"] == ["payments:read", "payments:write"]
    assert me["key"]["meta"] == {"tenant": "t_42"}

    page.goto(f"/o/{org.slug}/api-keys/{key.public_id}/")
    expect(page.locator("[data-scope='payments:write']")).to_be_visible()
    expect(page.locator("#key-meta")).to_contain_text('"tenant": "t_42"')
    assert page.csp_violations == []  # type: ignore[attr-defined]


def test_bad_metadata_is_refused_in_the_form(
    page: Page, context: BrowserContext, live_server: Any, org: Organization, admin_user: Any
) -> None:
    sign_in_browser(context, live_server, admin_user)
    page.goto(f"/o/{org.slug}/api-keys/new/")
    page.fill("input[name=name]", "Too much")
    page.check('input[value="usage:read"]')
    page.fill("textarea[name=meta]", '{"k": "' + "x" * 2041 + '"}')
    page.click("#create-key")
    expect(page.locator("#api-key-secret")).to_have_count(0)
    # Next to the field, and in the error summary on top of the form.
    expect(page.locator("ul.errorlist").get_by_text("2049 bytes as compact JSON")).to_be_visible()
    expect(page.locator(".error-summary a[href='#id_meta']")).to_be_visible()
    page.fill("textarea[name=meta]", "[1, 2]")
    page.click("#create-key")
    expect(page.locator("ul.errorlist").get_by_text("meta must be a JSON object")).to_be_visible()
    assert ApiKey.objects.count() == 0
