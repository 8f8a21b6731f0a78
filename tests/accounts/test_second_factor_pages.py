from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import pytest
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import services
from accounts.models import PasskeyDevice, RecoveryCode, User
from accounts.signin import PENDING_KEY
from orgs.models import AuditEvent
from tests.accounts.authenticator import SoftAuthenticator
from tests.accounts.helpers import confirmed_totp, totp_code

pytestmark = pytest.mark.django_db

MagicSignIn = Callable[..., Any]


def post_json(client: Client, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json")


def register_passkey(client: Client, soft: SoftAuthenticator, name: str = "Laptop") -> Any:
    options = client.post("/account/passkeys/register/options/").json()
    return post_json(
        client, "/account/passkeys/register/", {"name": name, "credential": soft.register(options)}
    )


@pytest.fixture
def totp_user(user: User) -> User:
    confirmed_totp(user)
    return user


def test_a_user_with_a_factor_is_not_signed_in_by_the_link_alone(
    client: Client, totp_user: User, magic_sign_in: MagicSignIn
) -> None:
    response = magic_sign_in(client, totp_user.email, next_url="/o/acme/")
    assert response.status_code == 302
    assert response["Location"] == "/login/2fa/"
    assert "_auth_user_id" not in client.session
    assert client.session[PENDING_KEY]["user_id"] == totp_user.pk
    assert not AuditEvent.objects.filter(action="user.signed_in").exists()

    page = client.get("/login/2fa/")
    html = page.content.decode()
    assert page.status_code == 200
    assert 'name="otp_token"' in html
    assert 'id="use-passkey"' not in html  # no passkey registered
    assert totp_user.email in html


@pytest.mark.parametrize("path", ["/", "/account/security/", "/o/acme/", "/platform/"])
def test_while_pending_only_the_second_factor_page_is_reachable(
    client: Client, totp_user: User, magic_sign_in: MagicSignIn, path: str
) -> None:
    magic_sign_in(client, totp_user.email)
    response = client.get(path)
    assert response.status_code == 302
    assert response["Location"] == "/login/2fa/"


def test_while_pending_sign_in_pages_and_sign_out_stay_open(
    client: Client, totp_user: User, magic_sign_in: MagicSignIn
) -> None:
    magic_sign_in(client, totp_user.email)
    assert client.get("/login/").status_code == 200
    assert client.get("/static/css/app.css").status_code != 302
    assert client.post("/logout/").status_code == 302
    assert PENDING_KEY not in client.session
    assert client.get("/").status_code == 200


def test_a_correct_totp_code_completes_sign_in_and_verifies_the_session(
    client: Client, totp_user: User, magic_sign_in: MagicSignIn
) -> None:
    magic_sign_in(client, totp_user.email, next_url="/account/security/")
    device = TOTPDevice.objects.get(user=totp_user)
    wrong = "000000" if totp_code(device) != "000000" else "111111"
    failed = client.post("/login/2fa/", {"otp_token": wrong})
    assert failed.status_code == 400
    assert "not valid" in failed.content.decode()
    assert "_auth_user_id" not in client.session
    assert AuditEvent.objects.filter(action="user.second_factor_failed").count() == 1

    device.refresh_from_db()
    device.throttle_reset()
    response = client.post("/login/2fa/", {"otp_token": totp_code(device)})
    assert response.status_code == 302
    assert response["Location"] == "/account/security/"
    assert client.session["_auth_user_id"] == str(totp_user.pk)
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert PENDING_KEY not in client.session
    event = AuditEvent.objects.get(action="user.signed_in")
    assert event.details == {"method": "magic_link+totp"}
    assert client.get("/account/security/").status_code == 200


def test_a_recovery_code_completes_sign_in_once(
    client: Client, user: User, magic_sign_in: MagicSignIn
) -> None:
    device = services.totp_enrolment_start(user=user)
    codes = services.totp_enrolment_confirm(user=user, token=totp_code(device)).recovery_codes
    magic_sign_in(client, user.email)
    response = client.post("/login/2fa/", {"otp_token": codes[3]})
    assert response.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)
    assert "recoverycodedevice" in client.session[DEVICE_ID_SESSION_KEY]
    assert RecoveryCode.objects.filter(device__user=user, used_at__isnull=False).count() == 1
    assert AuditEvent.objects.filter(action="user.recovery_code_used").count() == 1

    second = Client()
    magic_sign_in(second, user.email)
    again = second.post("/login/2fa/", {"otp_token": codes[3]})
    assert again.status_code == 400
    assert "_auth_user_id" not in second.session


def test_an_expired_pending_sign_in_starts_over(
    client: Client, totp_user: User, magic_sign_in: MagicSignIn
) -> None:
    magic_sign_in(client, totp_user.email)
    session = client.session
    session[PENDING_KEY] = {**session[PENDING_KEY], "at": int(time.time()) - 3600}
    session.save()
    response = client.get("/login/2fa/")
    assert response.status_code == 302
    assert response["Location"] == "/login/"
    assert client.get("/").status_code == 200


def test_the_second_factor_page_without_a_sign_in_sends_to_login(client: Client) -> None:
    response = client.get("/login/2fa/")
    assert response.status_code == 302 and response["Location"] == "/login/"


def test_a_passkey_as_second_factor(
    client: Client,
    user: User,
    soft_authenticator: SoftAuthenticator,
    magic_sign_in: MagicSignIn,
) -> None:
    client.force_login(user)
    assert register_passkey(client, soft_authenticator).status_code == 200
    client.post("/logout/")

    magic_sign_in(client, user.email, next_url="/account/security/")
    page = client.get("/login/2fa/").content.decode()
    assert 'id="use-passkey"' in page
    options = client.post("/login/2fa/passkey/options/").json()
    assert options["allowCredentials"][0]["id"] == PasskeyDevice.objects.get().credential_id
    response = post_json(
        client, "/login/2fa/passkey/verify/", {"credential": soft_authenticator.assert_(options)}
    )
    assert response.status_code == 200
    assert response.json() == {"ok": True, "redirect": "/account/security/"}
    assert client.session["_auth_user_id"] == str(user.pk)
    assert "passkeydevice" in client.session[DEVICE_ID_SESSION_KEY]
    event = AuditEvent.objects.filter(action="user.signed_in").latest("created_at")
    assert event.details == {"method": "magic_link+passkey"}


def test_passwordless_passkey_sign_in_is_both_factors(
    client: Client, user: User, soft_authenticator: SoftAuthenticator
) -> None:
    client.force_login(user)
    register_passkey(client, soft_authenticator)
    client.post("/logout/")

    options = client.post("/login/passkey/options/").json()
    assert options["userVerification"] == "required"
    assert options.get("allowCredentials", []) == []
    response = post_json(
        client,
        "/login/passkey/verify/",
        {"credential": soft_authenticator.assert_(options), "next": "/account/security/"},
    )
    assert response.status_code == 200
    assert response.json()["redirect"] == "/account/security/"
    assert client.session["_auth_user_id"] == str(user.pk)
    assert "passkeydevice" in client.session[DEVICE_ID_SESSION_KEY]
    assert AuditEvent.objects.filter(action="user.signed_in").latest("created_at").details == {
        "method": "passkey"
    }


def test_passkey_sign_in_ignores_an_off_site_next(
    client: Client, user: User, soft_authenticator: SoftAuthenticator
) -> None:
    client.force_login(user)
    register_passkey(client, soft_authenticator)
    client.post("/logout/")
    options = client.post("/login/passkey/options/").json()
    response = post_json(
        client,
        "/login/passkey/verify/",
        {"credential": soft_authenticator.assert_(options), "next": "//evil.example/"},
    )
    assert response.json()["redirect"] == "/"


def test_passkey_sign_in_replaying_the_challenge_fails(
    client: Client, user: User, soft_authenticator: SoftAuthenticator
) -> None:
    client.force_login(user)
    register_passkey(client, soft_authenticator)
    client.post("/logout/")
    options = client.post("/login/passkey/options/").json()
    credential = soft_authenticator.assert_(options)
    assert (
        post_json(client, "/login/passkey/verify/", {"credential": credential}).status_code == 200
    )
    client.post("/logout/")
    replay = post_json(client, "/login/passkey/verify/", {"credential": credential})
    assert replay.status_code == 400
    assert replay.json()["error"]["code"].startswith("challenge")
    assert "_auth_user_id" not in client.session


@pytest.mark.parametrize(
    ("body", "content_type", "code"),
    [
        ("{not json", "application/json", "malformed_json"),
        ("[1, 2]", "application/json", "malformed_json"),
        ('{"credential": 1}', "text/plain", "malformed_json"),
        ("\xff\xfe", "application/json", "malformed_json"),
        ('{"credential": {"id": "x"}}', "application/json", "challenge_invalid"),
    ],
)
def test_json_endpoints_answer_bad_input_with_a_clear_4xx(
    client: Client, body: str, content_type: str, code: str
) -> None:
    response = client.post("/login/passkey/verify/", data=body, content_type=content_type)
    assert response.status_code == 400
    assert response["Content-Type"] == "application/json"
    assert response.json()["error"]["code"] == code


def test_passkey_endpoints_only_accept_post(client: Client) -> None:
    for url in (
        "/login/passkey/options/",
        "/login/passkey/verify/",
        "/login/2fa/passkey/options/",
        "/account/passkeys/register/options/",
    ):
        assert client.get(url).status_code == 405


def test_second_factor_passkey_endpoints_need_a_pending_sign_in(client: Client) -> None:
    response = client.post("/login/2fa/passkey/options/")
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "no_sign_in"


def test_a_signed_in_but_unverified_session_can_step_up(client: Client, totp_user: User) -> None:
    client.force_login(totp_user)
    page = client.get("/login/2fa/?next=/platform/")
    assert page.status_code == 200
    assert "Confirm it" in page.content.decode()
    device = TOTPDevice.objects.get(user=totp_user)
    response = client.post("/login/2fa/", {"otp_token": totp_code(device), "next": "/platform/"})
    assert response.status_code == 302 and response["Location"] == "/platform/"
    assert client.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
