"""The personal security log on /account/security/: the user's own sign-ins, factor
changes and failed second factors (events with no org), newest first, a page at a time."""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

import pytest
from django.db import connection
from django.test import Client
from django.utils import timezone

from accounts import services
from accounts.models import User
from accounts.selectors import SECURITY_LOG_PAGE_SIZE
from orgs.actors import Actor
from orgs.models import AuditEvent, Organization
from orgs.services import audit_record
from tests.accounts.helpers import confirmed_totp, totp_code
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

ROW = re.compile(
    r'<tr class="security-event[^"]*" data-action="([^"]+)">'
    r'.*?<span class="event-title">([^<]+)</span>',
    re.S,
)


def log_rows(html: str) -> list[tuple[str, str]]:
    section = html[html.index('id="security-log"') :]
    return ROW.findall(section)


def test_sign_ins_factor_changes_and_failures_are_shown(
    client: Client, user: User, magic_sign_in: Any
) -> None:
    magic_sign_in(client, user.email)  # signed in with the link
    device = confirmed_totp(user)
    audit_record(action="user.totp_enabled", actor=Actor.for_user(user), target=user)
    wrong = "000000" if totp_code(device) != "000000" else "111111"
    assert not services.second_factor_verify(user=user, token=wrong).ok
    html = client.get("/account/security/", HTTP_USER_AGENT="x").content.decode()
    rows = log_rows(html)
    actions = [action for action, _ in rows]
    assert actions[:3] == ["user.second_factor_failed", "user.totp_enabled", "user.signed_in"]
    titles = dict(rows)
    assert titles["user.signed_in"] == "Signed in"
    assert titles["user.totp_enabled"] == "Authenticator app added"
    assert titles["user.second_factor_failed"] == "Second factor failed"
    assert "With email link" in html
    assert "Wrong authenticator app" in html


def test_only_the_users_own_account_events_are_shown(
    client: Client, user: User, org: Organization
) -> None:
    bob = UserFactory.create(email="bob@example.com")
    audit_record(
        action="user.signed_in", actor=Actor.for_user(bob), target=bob, details={"method": "totp"}
    )
    audit_record(action="user.passkey_added", actor=Actor.for_user(bob), target_label="Bob's key")
    # The user's own org activity belongs to the org's audit log, not here.
    audit_record(
        action="api_key.created", org=org, actor=Actor.for_user(user), target_label="Org key"
    )
    audit_record(action="user.signed_in", org=org, actor=Actor.for_user(user), target=user)
    audit_record(action="user.passkey_added", actor=Actor.for_user(user), target_label="My key")
    client.force_login(user)
    html = client.get("/account/security/").content.decode()
    section = html[html.index('id="security-log"') :]
    assert "Bob's key" not in section and "Org key" not in section
    assert "“My key”" in section
    # Its own sign-in (force_login records none) and the passkey: nothing of org or Bob.
    assert [action for action, _ in log_rows(html)] == ["user.passkey_added"]


def test_the_log_is_paged_newest_first_with_an_older_link(client: Client, user: User) -> None:
    client.force_login(user)
    start = timezone.now() - timedelta(days=1)
    total = SECURITY_LOG_PAGE_SIZE + 5
    for minute in range(total):
        event = audit_record(
            action="user.signed_in", actor=Actor.for_user(user), details={"method": f"m{minute}"}
        )
        # Events are append-only: give each its own time with a raw update.
        with connection.cursor() as cursor:
            cursor.execute(
                f"UPDATE {AuditEvent._meta.db_table} SET created_at = %s WHERE id = %s",
                [start + timedelta(minutes=minute), event.pk],
            )
    first = client.get("/account/security/").content.decode()
    methods = re.findall(r"With (m\d+)", first)
    assert methods == [f"m{n}" for n in range(total - 1, total - 1 - SECURITY_LOG_PAGE_SIZE, -1)]
    older = re.search(r'href="(/account/security/\?before=evt_[0-9A-Za-z]+)#security-log"', first)
    assert older is not None and 'id="newest-security-events"' not in first

    second = client.get(older.group(1)).content.decode()
    assert re.findall(r"With (m\d+)", second) == [f"m{n}" for n in range(4, -1, -1)]
    assert 'id="older-security-events"' not in second
    assert 'id="newest-security-events"' in second


def test_a_malformed_log_cursor_is_a_400(client: Client, user: User) -> None:
    client.force_login(user)
    assert client.get("/account/security/?before=evt_a%00b").status_code == 400
    assert client.get("/account/security/?before=../../x").status_code == 400
    # Someone else's (or an unknown) event id is simply the first page.
    bob = UserFactory.create(email="bob@example.com")
    theirs = audit_record(action="user.signed_in", actor=Actor.for_user(bob))
    assert client.get(f"/account/security/?before={theirs.public_id}").status_code == 200


def test_the_page_runs_a_constant_number_of_queries(
    client: Client, user: User, django_assert_max_num_queries: Any
) -> None:
    client.force_login(user)
    client.get("/account/security/")
    for _ in range(30):
        audit_record(
            action="user.signed_in", actor=Actor.for_user(user), details={"method": "totp"}
        )
        other = Client()
        other.force_login(user)
    with django_assert_max_num_queries(20):
        assert client.get("/account/security/").status_code == 200
