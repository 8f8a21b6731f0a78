from __future__ import annotations

import hashlib
import re
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from django.conf import settings
from django.core import mail
from django.core.mail import EmailMultiAlternatives
from django.test import Client, override_settings
from django.utils import timezone

from accounts import services
from accounts.models import MagicLinkToken, User
from orgs.models import AuditEvent
from tests.accounts.helpers import last_magic_link_token

pytestmark = pytest.mark.django_db

PostLogin = Callable[..., Any]


@pytest.fixture
def post_login(client: Client, django_capture_on_commit_callbacks: Any) -> PostLogin:
    """POST /login/ and run the on-commit email task, like a real request would."""

    def post(email: str, *, next_url: str | None = None, **extra: Any) -> Any:
        data = {"email": email}
        if next_url is not None:
            data["next"] = next_url
        with django_capture_on_commit_callbacks(execute=True):
            return client.post("/login/", data, **extra)

    return post


# --- services ------------------------------------------------------------------------------


def test_a_link_is_stored_only_as_a_digest_and_emailed(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        services.magic_link_request(email="Alice@Example.com ")
    token = last_magic_link_token("alice@example.com")
    assert len(token) >= 43  # 32 random bytes, url-safe base64
    row = MagicLinkToken.objects.get()
    assert row.email == "alice@example.com"
    assert row.token_hash == hashlib.sha256(token.encode()).hexdigest()
    assert token not in row.token_hash
    assert row.expires_at - row.created_at == timedelta(minutes=15)
    message = mail.outbox[-1]
    assert message.to == ["alice@example.com"]
    assert isinstance(message, EmailMultiAlternatives)
    html = message.alternatives[0][0]
    assert f"/login/magic/{token}/" in str(html)
    event = AuditEvent.objects.get(action="user.magic_link_requested")
    assert token not in str(event.details) and event.target_label == "alice@example.com"


def test_a_link_works_once(django_capture_on_commit_callbacks: Any, user: User) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        services.magic_link_request(email=user.email)
    token = last_magic_link_token()
    first = services.magic_link_consume(token=token)
    assert first is not None and first.user == user and not first.created
    assert services.magic_link_consume(token=token) is None


def test_an_expired_link_is_refused(django_capture_on_commit_callbacks: Any, user: User) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        services.magic_link_request(email=user.email)
    token = last_magic_link_token()
    MagicLinkToken.objects.update(expires_at=timezone.now() - timedelta(seconds=1))
    assert services.magic_link_consume(token=token) is None


def test_a_new_request_voids_older_links(
    django_capture_on_commit_callbacks: Any, user: User
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        services.magic_link_request(email=user.email)
    old = last_magic_link_token()
    with django_capture_on_commit_callbacks(execute=True):
        services.magic_link_request(email=user.email)
    new = last_magic_link_token()
    assert old != new
    assert services.magic_link_consume(token=old) is None
    assert services.magic_link_consume(token=new) is not None


def test_an_unknown_email_signs_up_on_confirmation(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        services.magic_link_request(email="newcomer@example.com")
    assert not User.objects.filter(email="newcomer@example.com").exists()
    assert "creat" in mail.outbox[-1].subject.lower()
    result = services.magic_link_consume(token=last_magic_link_token())
    assert result is not None and result.created
    assert result.user.email == "newcomer@example.com"
    assert not result.user.has_usable_password()
    assert AuditEvent.objects.filter(action="user.signed_up", actor_user=result.user).exists()


def test_a_deactivated_account_cannot_sign_in(
    django_capture_on_commit_callbacks: Any, user: User
) -> None:
    user.is_active = False
    user.save()
    with django_capture_on_commit_callbacks(execute=True):
        services.magic_link_request(email=user.email)
    assert services.magic_link_consume(token=last_magic_link_token()) is None


@pytest.mark.parametrize("token", ["", "short", "x" * 500, "../../etc", "a b" * 20])
def test_malformed_tokens_are_refused(token: str) -> None:
    assert services.magic_link_consume(token=token) is None


def test_only_a_same_site_next_is_kept_with_the_link(
    django_capture_on_commit_callbacks: Any,
) -> None:
    with django_capture_on_commit_callbacks(execute=True):
        services.magic_link_request(email="a@example.com", next_url="https://evil.example/")
        services.magic_link_request(email="b@example.com", next_url="/invitations/abc/")
    assert MagicLinkToken.objects.get(email="a@example.com").next_url == ""
    assert MagicLinkToken.objects.get(email="b@example.com").next_url == "/invitations/abc/"


# --- pages ---------------------------------------------------------------------------------


def test_login_page_has_the_email_field_and_prefills_it(client: Client) -> None:
    response = client.get("/login/?email=invitee%40example.com&next=/invitations/tok/")
    html = response.content.decode()
    assert response.status_code == 200
    assert re.search(r'<input[^>]*name="email"[^>]*value="invitee@example.com"', html)
    assert 'name="next" value="/invitations/tok/"' in html
    assert 'id="sign-in-with-passkey"' in html


def _normalise(html: str, email: str) -> str:
    html = html.replace(email, "EMAIL")
    return re.sub(r'name="csrfmiddlewaretoken" value="[^"]+"', "CSRF", html)


def test_the_answer_is_the_same_whether_or_not_an_account_exists(
    post_login: PostLogin, user: User
) -> None:
    known = post_login(user.email)
    unknown = post_login("nobody@example.com")
    assert known.status_code == unknown.status_code == 200
    assert _normalise(known.content.decode(), user.email) == _normalise(
        unknown.content.decode(), "nobody@example.com"
    )
    assert known["Cache-Control"] == unknown["Cache-Control"]
    assert {m.to[0] for m in mail.outbox} == {user.email, "nobody@example.com"}
    assert not User.objects.filter(email="nobody@example.com").exists()


def test_an_invalid_email_is_a_form_error_and_sends_nothing(post_login: PostLogin) -> None:
    response = post_login("not-an-email")
    assert response.status_code == 400
    assert "errorlist" in response.content.decode()
    assert mail.outbox == []


def test_requests_are_rate_limited_per_email(post_login: PostLogin) -> None:
    for _ in range(5):
        assert post_login("target@example.com").status_code == 200
    limited = post_login("target@example.com")
    assert limited.status_code == 429
    assert "Too many attempts" in limited.content.decode()
    assert len(mail.outbox) == 5
    # Another address from the same place is still served.
    assert post_login("someone-else@example.com").status_code == 200


@override_settings(MAGIC_LINK_RATE_PER_IP="3/h")
def test_requests_are_rate_limited_per_ip(post_login: PostLogin) -> None:
    for n in range(3):
        assert post_login(f"user{n}@example.com").status_code == 200
    assert post_login("user9@example.com").status_code == 429
    assert post_login("user10@example.com", REMOTE_ADDR="10.0.0.2").status_code == 200


def test_the_link_page_asks_for_confirmation_and_changes_nothing(
    client: Client, post_login: PostLogin
) -> None:
    post_login("new@example.com")
    token = last_magic_link_token()
    for _ in range(2):  # a mail scanner fetching twice
        response = client.get(f"/login/magic/{token}/")
        assert response.status_code == 200
        assert response["Referrer-Policy"] == "no-referrer"
        assert '<button type="submit" id="confirm-sign-in"' in response.content.decode()
    assert not User.objects.filter(email="new@example.com").exists()
    assert MagicLinkToken.objects.get().used_at is None
    assert "_auth_user_id" not in client.session


def test_confirming_signs_in_rotates_the_session_and_audits(
    client: Client, post_login: PostLogin, user: User
) -> None:
    post_login(user.email)
    token = last_magic_link_token()
    client.get(f"/login/magic/{token}/")
    session = client.session  # an anonymous session that existed before sign-in
    session["seen"] = True
    session.save()
    before = client.cookies[settings.SESSION_COOKIE_NAME].value
    response = client.post(f"/login/magic/{token}/")
    assert response.status_code == 302
    assert response["Location"] == "/"
    assert response["Referrer-Policy"] == "no-referrer"
    after = client.cookies[settings.SESSION_COOKIE_NAME].value
    assert before != after
    assert client.session["_auth_user_id"] == str(user.pk)
    event = AuditEvent.objects.get(action="user.signed_in")
    assert event.actor_user == user and event.details == {"method": "magic_link"}
    # Used once: a second confirmation is refused.
    other = Client()
    again = other.post(f"/login/magic/{token}/")
    assert again.status_code == 400
    assert "_auth_user_id" not in other.session


def test_an_unknown_token_page_says_so(client: Client) -> None:
    token = "A" * 43
    assert client.get(f"/login/magic/{token}/").status_code == 400
    assert client.post(f"/login/magic/{token}/").status_code == 400


def test_next_survives_the_email_and_the_confirmation(
    client: Client, post_login: PostLogin
) -> None:
    client.get("/login/?next=/invitations/tok123/&email=invitee@example.com")
    post_login("invitee@example.com", next_url="/invitations/tok123/")
    token = last_magic_link_token()
    assert "tok123" not in mail.outbox[-1].body  # next stays server-side
    response = client.post(f"/login/magic/{token}/")
    assert response["Location"] == "/invitations/tok123/"


@pytest.mark.parametrize(
    "evil",
    [
        "https://evil.example/",
        "//evil.example/",
        "/\\evil.example",
        "\\\\evil.example",
        "javascript:alert(1)",
        "http:/evil.example",
        "/ok\r\nLocation: https://evil.example",
        "relative/path",
    ],
)
def test_an_off_site_next_is_ignored(client: Client, post_login: PostLogin, evil: str) -> None:
    post_login("someone@example.com", next_url=evil)
    token = last_magic_link_token()
    response = client.post(f"/login/magic/{token}/")
    assert response.status_code == 302
    assert response["Location"] == "/"


def test_sign_out_needs_a_post_and_is_audited(client: Client, user: User) -> None:
    client.force_login(user)
    assert client.get("/logout/").status_code == 405
    response = client.post("/logout/")
    assert response.status_code == 302
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="user.signed_out", actor_user=user).exists()


def test_the_confirmation_script_gets_json_and_never_a_referrer(
    client: Client, post_login: PostLogin, user: User
) -> None:
    post_login(user.email, next_url="/account/security/")
    token = last_magic_link_token()
    page = client.get(f"/login/magic/{token}/").content.decode()
    assert 'src="/static/js/magic-link.js"' in page and "data-magic-link" in page
    response = client.post(f"/login/magic/{token}/", HTTP_ACCEPT="application/json")
    assert response.status_code == 200
    assert response.json() == {"ok": True, "redirect": "/account/security/"}
    assert response["Referrer-Policy"] == "no-referrer"
    assert client.session["_auth_user_id"] == str(user.pk)
    again = Client().post(f"/login/magic/{token}/", HTTP_ACCEPT="application/json")
    assert again.status_code == 400
    assert again.json()["error"]["code"] == "link_unusable"
