"""Browser journey: an owner invites a member, who signs in through the emailed magic link,
accepts and sees the org, cannot reach admin pages, and gets a 404 for another org."""

from __future__ import annotations

import re
from typing import Any
from urllib.parse import urlsplit

from django.core import mail
from playwright.sync_api import Browser, BrowserContext, ConsoleMessage, Page, expect

from orgs.models import Invitation, Membership, Role
from tests.e2e.conftest import sign_in_browser
from tests.factories import MembershipFactory, OrganizationFactory, UserFactory


def _last_link(to: str, pattern: str) -> str:
    """The path of the last link matching `pattern` emailed to `to`."""
    for message in reversed(mail.outbox):
        if to in message.to:
            match = re.search(pattern, str(message.body))
            if match:
                return urlsplit(match.group(0)).path
    raise AssertionError(f"no email to {to} with a link like {pattern}")


def _csp_clean(page: Page) -> None:
    assert page.csp_violations == []  # type: ignore[attr-defined]


def test_owner_invites_a_member_who_accepts_through_the_magic_link(
    page: Page, context: BrowserContext, browser: Browser, live_server: Any
) -> None:
    acme = OrganizationFactory.create(name="Acme Rockets", slug="acme")
    globex = OrganizationFactory.create(name="Globex", slug="globex")
    owner = MembershipFactory.create(
        org=acme, user=UserFactory.create(email="owner@acme.test"), role=Role.OWNER
    ).user
    MembershipFactory.create(org=globex, role=Role.OWNER)

    # The owner invites bob from the members page.
    sign_in_browser(context, live_server, owner)
    page.goto("/o/acme/members/")
    expect(page.locator("h1")).to_have_text("Members")
    page.fill("input[name=email]", "bob@example.com")
    page.select_option("select[name=role]", "member")
    page.click("#send-invitation")
    expect(page.locator(".message-success")).to_contain_text("Invitation sent to bob@example.com")
    expect(page.locator("tr.invitation")).to_contain_text("bob@example.com")
    _csp_clean(page)

    # Bob, in a browser of his own, opens the emailed link and signs in with a magic link.
    invitation_path = _last_link("bob@example.com", r"https?://[^\s]+/invitations/[A-Za-z0-9_-]+/")
    bob_context = browser.new_context(base_url=live_server.url)
    bob_context.set_default_timeout(15_000)
    bob = bob_context.new_page()
    bob.csp_violations = []  # type: ignore[attr-defined]

    def on_console(message: ConsoleMessage) -> None:
        if "Content Security Policy" in message.text:
            bob.csp_violations.append(message.text)  # type: ignore[attr-defined]

    bob.on("console", on_console)
    try:
        bob.goto(invitation_path)
        expect(bob.locator("h1")).to_contain_text("Join Acme Rockets")
        bob.click("#sign-in-to-accept")
        expect(bob.locator("input[name=email]")).to_have_value("bob@example.com")
        bob.click("#send-magic-link")
        expect(bob.locator("body")).to_contain_text("bob@example.com")
        magic_path = _last_link("bob@example.com", r"https?://[^\s]+/login/magic/[^\s/]+/")
        bob.goto(magic_path)
        bob.click("#confirm-sign-in")

        # Back on the invitation (by its id: the token is never carried through sign-in),
        # now signed in as bob: accept.
        invitation = Invitation.objects.get(org=acme, email="bob@example.com")
        bob.wait_for_url(f"**/invitations/id/{invitation.public_id}/")
        expect(bob.locator("#current-user")).to_have_text("bob@example.com")
        bob.click("#accept-invitation")
        bob.wait_for_url("**/o/acme/")
        expect(bob.locator("h1")).to_have_text("Acme Rockets")
        expect(bob.locator(".message-success")).to_contain_text("Welcome to Acme Rockets")
        membership = Membership.objects.get(org=acme, user__email="bob@example.com")
        assert membership.role == Role.MEMBER

        # A member sees the members list but not admin pages.
        bob.goto("/o/acme/members/")
        expect(bob.locator("tr.member")).to_have_count(2)
        expect(bob.locator("#send-invitation")).to_have_count(0)
        response = bob.goto("/o/acme/settings/")
        assert response is not None and response.status == 403
        response = bob.goto("/o/acme/members/invite/")
        assert response is not None and response.status == 403

        # Another org, and one that does not exist, are the same 404.
        response = bob.goto("/o/globex/")
        assert response is not None and response.status == 404
        expect(bob.locator("body")).not_to_contain_text("Globex")
        response = bob.goto("/o/no-such-org/")
        assert response is not None and response.status == 404

        # The used invitation link no longer works.
        response = bob.goto(invitation_path)
        assert response is not None and response.status == 404
        _csp_clean(bob)
    finally:
        bob_context.close()

    # The owner sees bob in the member list, no longer pending.
    page.goto("/o/acme/members/")
    expect(page.locator("tr.member")).to_have_count(2)
    expect(page.locator("tr.invitation")).to_have_count(0)


def test_new_user_onboards_and_switches_between_orgs(
    page: Page, context: BrowserContext, live_server: Any
) -> None:
    user = UserFactory.create(email="founder@example.com")
    sign_in_browser(context, live_server, user)
    page.goto("/")
    page.wait_for_url("**/onboarding/")
    page.fill("input[name=name]", "First Co")
    page.click("#create-org")
    page.wait_for_url("**/o/first-co/")
    expect(page.locator("h1")).to_have_text("First Co")

    page.select_option("select[name=org]", "+new")
    page.wait_for_url("**/orgs/new/")
    page.fill("input[name=name]", "Second Co")
    page.fill("input[name=slug]", "second")
    page.click("#create-org")
    page.wait_for_url("**/o/second/")

    # The switcher (an ES module) navigates as soon as an org is picked.
    page.select_option("select[name=org]", "first-co")
    page.wait_for_url("**/o/first-co/")
    # The selected-org cookie brings the user back to the last org.
    page.goto("/")
    page.wait_for_url("**/o/first-co/")
    _csp_clean(page)
