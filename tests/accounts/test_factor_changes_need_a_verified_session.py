"""A session that never passed the second factor cannot change factors (docs/product.md#accounts).

A signed-in but unverified session (a magic link alone, with a factor enrolled elsewhere)
is sent to `/login/2fa/` before adding or removing a factor or regenerating recovery codes,
and a factor change never verifies a session that was not verified by that factor.
"""

from __future__ import annotations

import json
from typing import Any

import pytest
from django.test import Client
from django_otp import DEVICE_ID_SESSION_KEY
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import services
from accounts.models import PasskeyDevice, PlatformRole, RecoveryCode, User
from tests.accounts.authenticator import SoftAuthenticator
from tests.accounts.helpers import confirmed_totp, totp_code
from tests.conftest import signed_in_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db

VERIFY = "/login/2fa/?next=%2Faccount%2Fsecurity%2F"


def post_json(client: Client, url: str, body: Any) -> Any:
    return client.post(url, data=json.dumps(body), content_type="application/json")


@pytest.fixture
def staff_with_factors(soft_authenticator: SoftAuthenticator) -> User:
    """Platform staff with an authenticator app and a passkey of their own."""
    staff = UserFactory.create(email="ops@latchkey.test", platform_role=PlatformRole.PLATFORM_ADMIN)
    setup = signed_in_client(staff)
    options = setup.post("/account/passkeys/register/options/").json()
    post_json(
        setup,
        "/account/passkeys/register/",
        {"name": "Own key", "credential": soft_authenticator.register(options)},
    )
    assert PasskeyDevice.objects.filter(user=staff).count() == 1
    confirmed_totp(staff)
    staff.refresh_from_db()  # adding the passkey replaced its session stamp (ADR 0077)
    return staff


def unverified(user: User) -> Client:
    """Signed in (recently, by magic link) but never passed the second factor."""
    client = signed_in_client(user)
    assert DEVICE_ID_SESSION_KEY not in client.session
    return client


def test_removing_totp_from_an_unverified_session_is_sent_to_verify(
    staff_with_factors: User,
) -> None:
    client = unverified(staff_with_factors)
    assert client.get("/platform/").status_code == 302
    response = client.post("/account/totp/disable/")
    assert response.status_code == 302
    assert response["Location"] == VERIFY
    assert TOTPDevice.objects.filter(user=staff_with_factors, confirmed=True).exists()
    assert DEVICE_ID_SESSION_KEY not in client.session
    held = client.get("/platform/")
    assert held.status_code == 302 and held["Location"].startswith("/login/2fa/")


def test_removing_a_passkey_from_an_unverified_session_is_sent_to_verify(
    staff_with_factors: User,
) -> None:
    client = unverified(staff_with_factors)
    passkey = PasskeyDevice.objects.get(user=staff_with_factors)
    response = client.post(f"/account/passkeys/{passkey.public_id}/delete/")
    assert response["Location"] == VERIFY
    assert PasskeyDevice.objects.filter(pk=passkey.pk).exists()
    assert DEVICE_ID_SESSION_KEY not in client.session
    assert client.get("/platform/").status_code == 302


def test_an_unverified_session_cannot_register_its_own_passkey(
    staff_with_factors: User, soft_authenticator: SoftAuthenticator
) -> None:
    client = unverified(staff_with_factors)
    options = client.post("/account/passkeys/register/options/")
    assert options.status_code == 403
    error = options.json()["error"]
    assert error["code"] == "second_factor_required"
    assert error["redirect"] == VERIFY

    # Even with a registration challenge obtained some other way, registering is refused.
    attacker_key = SoftAuthenticator(origin=soft_authenticator.origin)
    options_json, challenge = services.passkey_registration_options(user=staff_with_factors)
    session = client.session
    session["accounts_webauthn_register"] = challenge.public_id
    session.save()
    registered = post_json(
        client,
        "/account/passkeys/register/",
        {"name": "Attacker", "credential": attacker_key.register(options_json)},
    )
    assert registered.status_code == 403
    assert registered.json()["error"]["code"] == "second_factor_required"
    assert PasskeyDevice.objects.filter(user=staff_with_factors).count() == 1
    assert DEVICE_ID_SESSION_KEY not in client.session
    assert client.get("/platform/").status_code == 302


def test_an_unverified_session_cannot_enrol_totp_or_regenerate_codes(
    soft_authenticator: SoftAuthenticator,
) -> None:
    user = UserFactory.create(email="someone@example.com")
    setup = signed_in_client(user)
    options = setup.post("/account/passkeys/register/options/").json()
    post_json(
        setup, "/account/passkeys/register/", {"credential": soft_authenticator.register(options)}
    )
    codes_before = set(RecoveryCode.objects.filter(device__user=user).values_list("pk", flat=True))
    assert len(codes_before) == 10

    user.refresh_from_db()  # adding the passkey replaced its session stamp (ADR 0077)
    client = unverified(user)
    for path in ("/account/totp/start/", "/account/recovery-codes/regenerate/"):
        response = client.post(path)
        assert response.status_code == 302
        assert response["Location"] == VERIFY
    assert client.get("/account/totp/")["Location"] == VERIFY
    assert not TOTPDevice.objects.filter(user=user).exists()
    assert set(RecoveryCode.objects.filter(device__user=user).values_list("pk", flat=True)) == (
        codes_before
    )


def test_after_step_up_the_session_can_change_factors(staff_with_factors: User) -> None:
    client = unverified(staff_with_factors)
    device = TOTPDevice.objects.get(user=staff_with_factors)
    sent = client.post("/account/totp/disable/")
    verified = client.post(
        sent["Location"], {"otp_token": totp_code(device), "next": "/account/security/"}
    )
    assert verified["Location"] == "/account/security/"
    removed = client.post("/account/totp/disable/")
    assert removed["Location"] == "/account/security/"
    assert not TOTPDevice.objects.filter(user=staff_with_factors).exists()
    # The session was verified by the removed device: it stays verified by the passkey.
    assert "passkeydevice" in client.session[DEVICE_ID_SESSION_KEY]
    assert client.get("/platform/").status_code == 200


def test_adding_a_second_factor_keeps_the_verifying_device(
    staff_with_factors: User, soft_authenticator: SoftAuthenticator
) -> None:
    totp = TOTPDevice.objects.get(user=staff_with_factors)
    client = unverified(staff_with_factors)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = totp.persistent_id
    session.save()
    options = client.post("/account/passkeys/register/options/").json()
    added = post_json(
        client,
        "/account/passkeys/register/",
        {
            "name": "Spare",
            "credential": SoftAuthenticator(origin=soft_authenticator.origin).register(options),
        },
    )
    assert added.status_code == 200
    assert client.session[DEVICE_ID_SESSION_KEY] == totp.persistent_id


def test_the_first_factor_verifies_the_session_that_added_it(
    user: User, soft_authenticator: SoftAuthenticator
) -> None:
    client = signed_in_client(user)
    options = client.post("/account/passkeys/register/options/").json()
    added = post_json(
        client, "/account/passkeys/register/", {"credential": soft_authenticator.register(options)}
    )
    assert added.status_code == 200
    passkey = PasskeyDevice.objects.get(user=user)
    assert client.session[DEVICE_ID_SESSION_KEY] == passkey.persistent_id


def test_removing_a_factor_that_did_not_verify_the_session_does_not_repoint_it(
    staff_with_factors: User,
) -> None:
    """A verified session keeps its own device; a stale id is never upgraded."""
    totp = TOTPDevice.objects.get(user=staff_with_factors)
    passkey = PasskeyDevice.objects.get(user=staff_with_factors)
    client = unverified(staff_with_factors)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = passkey.persistent_id
    session.save()
    client.post("/account/totp/disable/")
    assert not TOTPDevice.objects.filter(pk=totp.pk).exists()
    assert client.session[DEVICE_ID_SESSION_KEY] == passkey.persistent_id


def test_the_security_page_says_a_factor_is_needed_first(staff_with_factors: User) -> None:
    client = unverified(staff_with_factors)
    assert 'id="verify-to-change"' in client.get("/account/security/").content.decode()
    totp = TOTPDevice.objects.get(user=staff_with_factors)
    session = client.session
    session[DEVICE_ID_SESSION_KEY] = totp.persistent_id
    session.save()
    assert 'id="verify-to-change"' not in client.get("/account/security/").content.decode()
