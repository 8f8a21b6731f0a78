"""Browser journey: an owner adds a webhook endpoint, copies its signing secret (shown
once), sends a test event that arrives signed, reads the delivery log, and disables the
endpoint through the confirm step; a member sees the pages read-only."""

from __future__ import annotations

from typing import Any

from playwright.sync_api import BrowserContext, Page, expect
from standardwebhooks import Webhook

from orgs.actors import Actor
from orgs.models import Role
from tests.e2e.conftest import sign_in_browser
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory
from tests.webhooks.conftest import Receiver, receiver  # noqa: F401 - fixture
from webhooks.models import WebhookEndpoint


def test_an_owner_adds_tests_and_disables_a_webhook_endpoint(
    page: Page,
    context: BrowserContext,
    live_server: Any,
    receiver: Receiver,  # noqa: F811
) -> None:
    acme = OrganizationFactory.create(name="Acme Rockets", slug="acme")
    owner = MembershipFactory.create(
        org=acme, user=UserFactory.create(email="owner@acme.test"), role=Role.OWNER
    ).user
    sign_in_browser(context, live_server, owner)

    page.goto("/o/acme/settings/")
    page.get_by_role("link", name="Manage webhooks").click()
    expect(page.locator("h1")).to_have_text("Webhooks")
    expect(page.locator("#no-webhooks")).to_be_visible()
    page.click("#create-webhook")
    page.fill("#id_url", receiver.url)
    page.fill("#id_description", "Billing service")
    page.click("#create-webhook-submit")

    # The secret, once.
    expect(page.locator("h1")).to_have_text("Webhook endpoint added")
    secret = page.locator("#webhook-secret").inner_text().strip()
    assert secret.startswith("whsec_")
    endpoint = WebhookEndpoint.objects.get(org=acme)
    page.goto(f"/o/acme/webhooks/{endpoint.public_id}/")
    assert secret not in page.content()

    # A test event arrives, signed with that secret, and shows in the delivery log.
    page.click("#send-test")
    expect(page.locator("tr.webhook-delivery")).to_have_count(1)
    expect(page.locator("tr.webhook-delivery")).to_contain_text("200")
    [received] = receiver.received
    payload = Webhook(secret).verify(received.body, received.headers)
    assert payload["type"] == "webhook.test"

    # Disabling asks first, says what happens, then disables.
    page.click("#disable-webhook")
    expect(page.locator("#confirm-disable")).to_be_visible()
    endpoint.refresh_from_db()
    assert endpoint.enabled
    page.click("#confirm-disable")
    expect(page.locator("#endpoint-status")).to_contain_text("disabled")
    expect(page.locator("#enable-webhook")).to_be_visible()
    assert page.csp_violations == []  # type: ignore[attr-defined]


def test_a_member_reads_the_webhooks_but_cannot_manage_them(
    page: Page,
    context: BrowserContext,
    live_server: Any,
    receiver: Receiver,  # noqa: F811
) -> None:
    from webhooks.services import endpoint_create

    acme = OrganizationFactory.create(name="Acme Rockets", slug="acme")
    member = MembershipFactory.create(
        org=acme, user=UserFactory.create(email="member@acme.test"), role=Role.MEMBER
    ).user
    endpoint, _ = endpoint_create(org=acme, url=receiver.url, actor=Actor.system())
    sign_in_browser(context, live_server, member)
    page.goto("/o/acme/webhooks/")
    expect(page.locator("tr.webhook-endpoint")).to_have_count(1)
    expect(page.locator("#create-webhook")).to_have_count(0)
    page.goto(f"/o/acme/webhooks/{endpoint.public_id}/")
    expect(page.locator("#endpoint-url")).to_have_text(receiver.url)
    expect(page.locator("#send-test")).to_have_count(0)
    expect(page.locator("#disable-webhook")).to_have_count(0)
