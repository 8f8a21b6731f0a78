"""The signed-in sessions on /account/security/ (ADR 0082): listed with browser, IP and
last seen; another one can be signed out, or all the others at once; the session key is
never stored in clear."""

from __future__ import annotations

import re
from typing import Any

import pytest
from django.conf import settings
from django.contrib.sessions.backends.db import SessionStore as DjangoSessionStore
from django.contrib.sessions.models import Session
from django.core.cache import cache
from django.test import Client

from accounts.models import User, UserSession
from accounts.session_store import session_key_digest
from accounts.signin import seen_cache_key
from accounts.useragents import describe_user_agent
from orgs.models import AuditEvent
from tests.accounts.db_scan import find_in_database
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

FIREFOX_WINDOWS = "Mozilla/5.0 (Windows NT 10.0; Win64; x64; rv:128.0) Gecko/20100101 Firefox/128.0"
SAFARI_IPHONE = (
    "Mozilla/5.0 (iPhone; CPU iPhone OS 17_5 like Mac OS X) AppleWebKit/605.1.15 "
    "(KHTML, like Gecko) Version/17.5 Mobile/15E148 Safari/604.1"
)
CHROME_MAC = (
    "Mozilla/5.0 (Macintosh; Intel Mac OS X 10_15_7) AppleWebKit/537.36 (KHTML, like Gecko) "
    "Chrome/126.0.0.0 Safari/537.36"
)


def browser(user_agent: str, ip: str) -> Client:
    return Client(HTTP_USER_AGENT=user_agent, REMOTE_ADDR=ip)


@pytest.fixture
def laptop(user: User, magic_sign_in: Any) -> Client:
    client = browser(FIREFOX_WINDOWS, "203.0.113.10")
    assert magic_sign_in(client, user.email).status_code == 302
    return client


@pytest.fixture
def phone(user: User, magic_sign_in: Any) -> Client:
    client = browser(SAFARI_IPHONE, "198.51.100.7")
    assert magic_sign_in(client, user.email).status_code == 302
    return client


def cookie(client: Client) -> str:
    return client.cookies[settings.SESSION_COOKIE_NAME].value


def listed(client: Client) -> UserSession:
    return UserSession.objects.get(key_digest=session_key_digest(cookie(client)))


def signed_in(client: Client) -> bool:
    return client.get("/account/security/").status_code == 200


def session_items(html: str) -> dict[str, str]:
    """`data-session-id` → the list item's HTML."""
    return dict(
        re.findall(r'<li class="session[^"]*" data-session-id="([^"]+)">(.*?)</li>', html, re.S)
    )


def test_each_sign_in_is_listed_with_its_browser_ip_and_last_seen(
    laptop: Client, phone: Client, user: User
) -> None:
    html = laptop.get("/account/security/").content.decode()
    items = session_items(html)
    assert set(items) == {listed(laptop).public_id, listed(phone).public_id}
    mine, other = items[listed(laptop).public_id], items[listed(phone).public_id]
    assert "Firefox on Windows" in mine and "203.0.113.10" in mine and "This browser" in mine
    assert "sign-out-session" not in mine  # the current session signs out with #sign-out
    assert "Safari on iOS" in other and "198.51.100.7" in other and "This browser" not in other
    assert f'action="/account/sessions/{listed(phone).public_id}/sign-out/"' in other
    assert 'id="sign-out-other-sessions"' in html
    # The current session comes first.
    assert html.index(listed(laptop).public_id) < html.index(listed(phone).public_id)


def test_the_session_key_is_stored_only_as_a_digest(laptop: Client) -> None:
    key = cookie(laptop)
    digest = session_key_digest(key)
    assert Session.objects.filter(session_key=digest).exists()
    assert not Session.objects.filter(session_key=key).exists()
    assert listed(laptop).key_digest == digest
    assert find_in_database([key]) == []


def test_a_stored_digest_does_not_work_as_a_cookie(laptop: Client) -> None:
    thief = Client()
    thief.cookies[settings.SESSION_COOKIE_NAME] = session_key_digest(cookie(laptop))
    response = thief.get("/account/security/")
    assert response.status_code == 302 and response["Location"].startswith("/login/")


def test_signing_out_another_session_ends_it(laptop: Client, phone: Client, user: User) -> None:
    target, phone_key = listed(phone), cookie(phone)
    response = laptop.post(f"/account/sessions/{target.public_id}/sign-out/")
    assert response.status_code == 302 and response["Location"] == "/account/security/#sessions"
    assert not Session.objects.filter(session_key=target.key_digest).exists()
    assert not UserSession.objects.filter(pk=target.pk).exists()
    page = laptop.get("/account/security/").content.decode()
    assert "The session on Safari on iOS was signed out." in page
    assert target.public_id not in page
    gone = phone.get("/account/security/")
    assert gone.status_code == 302 and gone["Location"].startswith("/login/")
    assert signed_in(laptop)

    event = AuditEvent.objects.get(action="user.session_signed_out")
    assert event.actor_user == user and event.org is None
    assert event.target_type == "session" and event.target_id == target.public_id
    assert event.target_label == "Safari on iOS"
    assert event.details["session_ip"] == "198.51.100.7"
    assert phone_key not in str(event.details)


def test_the_current_session_cannot_be_signed_out_from_the_list(laptop: Client) -> None:
    mine = listed(laptop)
    response = laptop.post(f"/account/sessions/{mine.public_id}/sign-out/", follow=True)
    assert "That is the session you are using" in response.content.decode()
    assert UserSession.objects.filter(pk=mine.pk).exists()
    assert signed_in(laptop)
    assert not AuditEvent.objects.filter(action="user.session_signed_out").exists()


def test_another_users_session_cannot_be_signed_out(laptop: Client, magic_sign_in: Any) -> None:
    bob = UserFactory.create(email="bob@example.com")
    bobs = Client()
    magic_sign_in(bobs, bob.email)
    theirs = listed(bobs)
    response = laptop.post(f"/account/sessions/{theirs.public_id}/sign-out/", follow=True)
    assert "That session has already ended." in response.content.decode()
    assert signed_in(bobs)
    # And it is not on the page either.
    assert theirs.public_id not in laptop.get("/account/security/").content.decode()


def test_signing_out_a_session_needs_a_post_and_a_sign_in(
    laptop: Client, phone: Client, client: Client
) -> None:
    target = listed(phone)
    assert laptop.get(f"/account/sessions/{target.public_id}/sign-out/").status_code == 405
    anonymous = client.post(f"/account/sessions/{target.public_id}/sign-out/")
    assert anonymous.status_code == 302 and anonymous["Location"].startswith("/login/")
    assert signed_in(phone)


def test_sign_out_all_other_sessions(
    laptop: Client, phone: Client, user: User, magic_sign_in: Any
) -> None:
    tablet = browser(CHROME_MAC, "192.0.2.33")
    magic_sign_in(tablet, user.email)
    others = [listed(phone), listed(tablet)]
    response = laptop.post("/account/sessions/sign-out-others/", follow=True)
    assert "Signed out 2 other sessions." in response.content.decode()
    assert signed_in(laptop)
    assert not signed_in(phone) and not signed_in(tablet)
    assert not Session.objects.filter(session_key__in=[s.key_digest for s in others]).exists()
    assert list(UserSession.objects.filter(user=user)) == [listed(laptop)]
    event = AuditEvent.objects.get(action="user.other_sessions_signed_out")
    assert event.actor_user == user and event.details == {"count": 2}


def test_sign_out_all_other_sessions_also_ends_sessions_not_listed_yet(
    laptop: Client, user: User
) -> None:
    """A session signed in before sessions were listed has no row until its next request;
    the session stamp (ADR 0077) ends it all the same."""
    unlisted = Client()
    unlisted.force_login(user)
    UserSession.objects.filter(key_digest=session_key_digest(cookie(unlisted))).delete()
    laptop.post("/account/sessions/sign-out-others/")
    assert not signed_in(unlisted)
    assert signed_in(laptop)


def test_signing_out_removes_the_session_from_the_list(laptop: Client, phone: Client) -> None:
    mine = listed(laptop)
    laptop.post("/logout/")
    assert not UserSession.objects.filter(pk=mine.pk).exists()
    assert mine.public_id not in phone.get("/account/security/").content.decode()


def test_last_seen_is_written_at_most_once_a_minute(laptop: Client) -> None:
    row = listed(laptop)
    first_seen = row.last_seen_at
    laptop.get("/account/security/", REMOTE_ADDR="203.0.113.99")
    row.refresh_from_db()
    assert row.last_seen_at == first_seen and row.ip == "203.0.113.10"

    cache.delete(seen_cache_key(row.key_digest))  # a minute has passed
    laptop.get("/account/security/", REMOTE_ADDR="203.0.113.99")
    row.refresh_from_db()
    assert row.last_seen_at > first_seen and row.ip == "203.0.113.99"


def test_being_seen_does_not_extend_the_session(laptop: Client) -> None:
    """Only a change to the session may push its expiry out: recording that it was seen
    must not, or a session used now and then would never expire."""
    row = listed(laptop)
    stored = Session.objects.get(session_key=row.key_digest)
    cache.delete(seen_cache_key(row.key_digest))
    response = laptop.get("/account/security/", REMOTE_ADDR="203.0.113.99")
    row.refresh_from_db()
    assert row.ip == "203.0.113.99"  # seen...
    assert Session.objects.get(session_key=row.key_digest).expire_date == stored.expire_date
    assert settings.SESSION_COOKIE_NAME not in response.cookies  # ...and not re-issued


def test_a_new_session_key_keeps_the_session_listed(laptop: Client, user: User) -> None:
    """Sign-in steps and factor changes give the session a new key: its row follows."""
    before = listed(laptop)
    session = laptop.session
    session.cycle_key()
    session.save()
    assert session.session_key is not None
    laptop.cookies[settings.SESSION_COOKIE_NAME] = session.session_key
    after = listed(laptop)
    assert after.pk == before.pk and after.key_digest != before.key_digest
    assert signed_in(laptop)


def test_sessions_made_by_djangos_own_engine_stay_signed_in(client: Client, user: User) -> None:
    """Switching to the digest-keyed engine signs nobody out: the migration moves a session
    stored with its key in clear under its digest, and the key is gone from the table."""
    from importlib import import_module

    from django.apps import apps

    signed = Client()
    signed.force_login(user)
    data = signed.session.load()
    legacy = DjangoSessionStore()
    legacy.update(data)
    legacy.create()
    key = legacy.session_key
    assert key is not None and Session.objects.filter(session_key=key).exists()

    client.cookies[settings.SESSION_COOKIE_NAME] = key
    assert not signed_in(client)  # never looked up in clear
    client.cookies[settings.SESSION_COOKIE_NAME] = key
    migration = import_module("accounts.migrations.0005_session_keys_under_digests")
    migration.move_under_digests(apps, None)
    assert not Session.objects.filter(session_key=key).exists()
    assert Session.objects.filter(session_key=session_key_digest(key)).exists()
    assert signed_in(client)
    assert UserSession.objects.filter(key_digest=session_key_digest(key), user=user).exists()


def test_clearsessions_forgets_rows_of_ended_sessions(laptop: Client, phone: Client) -> None:
    from django.core.management import call_command

    Session.objects.filter(session_key=listed(phone).key_digest).delete()
    phone_row = UserSession.objects.exclude(pk=listed(laptop).pk).get()
    call_command("clearsessions")
    assert not UserSession.objects.filter(pk=phone_row.pk).exists()
    assert UserSession.objects.filter(pk=listed(laptop).pk).exists()


@pytest.mark.parametrize(
    ("user_agent", "words"),
    [
        (FIREFOX_WINDOWS, "Firefox on Windows"),
        (SAFARI_IPHONE, "Safari on iOS"),
        (CHROME_MAC, "Chrome on macOS"),
        (
            "Mozilla/5.0 (X11; Linux x86_64) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Safari/537.36 Edg/126.0.0.0",
            "Edge on Linux",
        ),
        (
            "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) "
            "Chrome/126.0.0.0 Mobile Safari/537.36",
            "Chrome on Android",
        ),
        ("curl/8.5.0", "curl"),
        ("", "Unknown browser"),
    ],
)
def test_user_agents_are_described_in_a_few_words(user_agent: str, words: str) -> None:
    assert describe_user_agent(user_agent) == words


def test_a_row_of_the_same_digest_for_another_user_is_never_handed_over(
    laptop: Client, user: User
) -> None:
    row = listed(laptop)
    other = UserFactory.create(email="mallory@example.com")
    UserSession.objects.filter(pk=row.pk).update(user=other)
    cache.delete(seen_cache_key(row.key_digest))
    laptop.get("/account/security/")
    mine = UserSession.objects.get(key_digest=row.key_digest)
    assert mine.user_id == user.pk and mine.pk != row.pk
