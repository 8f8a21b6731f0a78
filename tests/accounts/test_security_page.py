from __future__ import annotations

import json
import re
import time
from base64 import b32decode
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pytest
from django.core import mail
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import PasskeyDevice, RecoveryCode, User
from accounts.signin import SIGNED_IN_AT_KEY
from orgs.models import AuditEvent
from tests.accounts.authenticator import SoftAuthenticator
from tests.accounts.helpers import confirmed_totp, totp_code, totp_secret_in

pytestmark = pytest.mark.django_db

CODE = re.compile(r'class="recovery-code">([a-z2-7-]+)<')


@pytest.fixture
def signed_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def make_stale(client: Client) -> None:
    session = client.session
    session[SIGNED_IN_AT_KEY] = int(time.time()) - 11 * 60
    session.save()


def post_json(client: Client, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json")


def test_the_security_page_needs_a_sign_in(client: Client) -> None:
    response = client.get("/account/security/")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=/account/security/")


def test_the_security_page_offers_every_factor(signed_in: Client) -> None:
    html = signed_in.get("/account/security/").content.decode()
    assert 'id="enable-totp"' in html
    assert 'id="add-passkey"' in html
    assert 'src="/static/js/webauthn.js"' in html and 'type="module"' in html
    assert "<script>" not in html and "onclick" not in html and "style=" not in html


def test_totp_enrolment_through_the_pages(
    signed_in: Client, user: User, django_capture_on_commit_callbacks: Any
) -> None:
    start = signed_in.post("/account/totp/start/")
    assert start.status_code == 302 and start["Location"] == "/account/totp/"
    page = signed_in.get("/account/totp/")
    html = page.content.decode()
    assert "no-store" in page["Cache-Control"]
    main = html[html.index("<main") : html.index("</main>")]
    assert "<svg" in main and "<script" not in main  # the QR code is markup, no script
    secret = totp_secret_in(html)
    key = b32decode(secret)
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    assert key == device.bin_key

    wrong = "000000" if totp_code(device) != "000000" else "111111"
    assert signed_in.post("/account/totp/", {"otp_token": wrong}).status_code == 400
    device.refresh_from_db()
    device.throttle_reset()
    with django_capture_on_commit_callbacks(execute=True):
        done = signed_in.post("/account/totp/", {"otp_token": totp_code(key.hex())})
    assert done.status_code == 200
    assert "no-store" in done["Cache-Control"]
    codes = CODE.findall(done.content.decode())
    assert len(codes) == 10
    device.refresh_from_db()
    assert device.confirmed
    # Enrolling proves the factor: this session is verified with it.
    assert signed_in.session[DEVICE_ID_SESSION_KEY] == device.persistent_id
    assert any("authenticator app was set up" in m.body for m in mail.outbox)
    # Shown once: the security page does not show them again.
    again = signed_in.get("/account/security/").content.decode()
    assert 'recovery-code"' not in again and codes[0] not in again
    assert "10 left" in again


def test_factor_changes_need_a_recent_sign_in(signed_in: Client, user: User) -> None:
    make_stale(signed_in)
    response = signed_in.post("/account/totp/start/")
    assert response.status_code == 302
    target = urlsplit(response["Location"])
    assert target.path == "/login/"
    assert parse_qs(target.query) == {
        "next": ["/account/security/"],
        "reauth": ["1"],
        "email": [user.email],
    }
    assert not TOTPDevice.objects.exists()

    api = signed_in.post("/account/passkeys/register/options/")
    assert api.status_code == 403
    assert api.json()["error"]["code"] == "reauthentication_required"

    confirmed_totp(user)
    assert signed_in.post("/account/totp/disable/").status_code == 302
    assert TOTPDevice.objects.filter(user=user).exists()
    assert signed_in.post("/account/recovery-codes/regenerate/").status_code == 302
    assert not RecoveryCode.objects.exists()

    page = signed_in.get(response["Location"]).content.decode()
    assert "Confirm it" in page


def test_signing_in_again_refreshes_the_window(
    client: Client, user: User, magic_sign_in: Any
) -> None:
    client.force_login(user)
    make_stale(client)
    response = magic_sign_in(client, user.email, next_url="/account/security/")
    assert response["Location"] == "/account/security/"
    assert client.post("/account/totp/start/").status_code == 302
    assert TOTPDevice.objects.filter(user=user, confirmed=False).exists()


def test_adding_listing_and_removing_passkeys(
    signed_in: Client,
    user: User,
    soft_authenticator: SoftAuthenticator,
    django_capture_on_commit_callbacks: Any,
) -> None:
    options = signed_in.post("/account/passkeys/register/options/").json()
    assert options["rp"]["id"] == "testserver"
    with django_capture_on_commit_callbacks(execute=True):
        first = post_json(
            signed_in,
            "/account/passkeys/register/",
            {"name": "Work laptop", "credential": soft_authenticator.register(options)},
        )
    assert first.status_code == 200
    assert "no-store" in first["Cache-Control"]
    body = first.json()
    assert len(body["recovery_codes"]) == 10  # first factor
    assert body["passkey"]["name"] == "Work laptop"
    assert any("Work laptop" in m.body for m in mail.outbox)

    options = signed_in.post("/account/passkeys/register/options/").json()
    assert len(options["excludeCredentials"]) == 1
    second = post_json(
        signed_in,
        "/account/passkeys/register/",
        {"name": "Phone", "credential": soft_authenticator.register(options)},
    )
    assert second.json()["recovery_codes"] == []

    html = signed_in.get("/account/security/").content.decode()
    assert html.count('class="passkey"') == 2
    assert "Work laptop" in html and "Phone" in html

    phone = PasskeyDevice.objects.get(name="Phone")
    removed = signed_in.post(f"/account/passkeys/{phone.public_id}/delete/")
    assert removed.status_code == 302
    html = signed_in.get("/account/security/").content.decode()
    assert html.count('class="passkey"') == 1
    assert AuditEvent.objects.filter(action="user.passkey_removed").count() == 1


def test_registration_with_bad_input_is_a_clear_4xx(
    signed_in: Client, soft_authenticator: SoftAuthenticator
) -> None:
    no_challenge = post_json(signed_in, "/account/passkeys/register/", {"credential": {}})
    assert no_challenge.status_code == 400
    options = signed_in.post("/account/passkeys/register/options/").json()
    bad_name = post_json(
        signed_in,
        "/account/passkeys/register/",
        {"name": ["x"], "credential": soft_authenticator.register(options)},
    )
    assert bad_name.status_code == 400
    assert bad_name.json()["error"]["param"] == "name"
    options = signed_in.post("/account/passkeys/register/options/").json()
    wrong_origin = post_json(
        signed_in,
        "/account/passkeys/register/",
        {"credential": soft_authenticator.register(options, origin="http://evil.example")},
    )
    assert wrong_origin.status_code == 400
    assert wrong_origin.json()["error"]["code"] == "verification_failed"
    assert not PasskeyDevice.objects.exists()


def test_a_user_cannot_remove_another_users_passkey(
    client: Client, user: User, soft_authenticator: SoftAuthenticator
) -> None:
    client.force_login(user)
    options = client.post("/account/passkeys/register/options/").json()
    post_json(
        client, "/account/passkeys/register/", {"credential": soft_authenticator.register(options)}
    )
    passkey = PasskeyDevice.objects.get()
    intruder = Client()
    intruder.force_login(User.objects.create_user("eve@example.com"))
    intruder.post(f"/account/passkeys/{passkey.public_id}/delete/")
    assert PasskeyDevice.objects.filter(pk=passkey.pk).exists()


def test_regenerating_recovery_codes_shows_a_new_set_once(signed_in: Client, user: User) -> None:
    totp = confirmed_totp(user)
    session = signed_in.session
    session[DEVICE_ID_SESSION_KEY] = totp.persistent_id
    session.save()
    first = CODE.findall(signed_in.post("/account/recovery-codes/regenerate/").content.decode())
    second_page = signed_in.post("/account/recovery-codes/regenerate/")
    second = CODE.findall(second_page.content.decode())
    assert len(first) == len(second) == 10
    assert not set(first) & set(second)
    assert "no-store" in second_page["Cache-Control"]
    assert RecoveryCode.objects.filter(device__user=user).count() == 10


def test_removing_the_factor_that_verified_the_session_keeps_it_verified_by_another(
    signed_in: Client, user: User, soft_authenticator: SoftAuthenticator
) -> None:
    options = signed_in.post("/account/passkeys/register/options/").json()
    post_json(
        signed_in,
        "/account/passkeys/register/",
        {"credential": soft_authenticator.register(options)},
    )
    totp = confirmed_totp(user)
    session = signed_in.session
    session[DEVICE_ID_SESSION_KEY] = totp.persistent_id
    session.save()
    signed_in.post("/account/totp/disable/")
    assert "passkeydevice" in signed_in.session[DEVICE_ID_SESSION_KEY]
    passkey = PasskeyDevice.objects.get()
    signed_in.post(f"/account/passkeys/{passkey.public_id}/delete/")
    assert DEVICE_ID_SESSION_KEY not in signed_in.session
