"""Removing a passkey, removing the authenticator app and regenerating recovery codes go
through a confirm step (config.confirm): GET says what will happen and changes nothing;
the step's POST performs."""

from __future__ import annotations

import json
import time

import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts import services
from accounts.models import PasskeyDevice, RecoveryCode, User
from accounts.signin import SIGNED_IN_AT_KEY
from tests.accounts.authenticator import SoftAuthenticator
from tests.accounts.helpers import totp_code
from tests.conftest import verified_client
from tests.factories import UserFactory

pytestmark = pytest.mark.django_db


@pytest.fixture
def with_totp(user: User) -> Client:
    """A verified session of a user with an authenticator app and recovery codes."""
    device = services.totp_enrolment_start(user=user)
    assert services.totp_enrolment_confirm(user=user, token=totp_code(device)).ok
    return verified_client(user)


def add_passkey(client: Client, authenticator: SoftAuthenticator, name: str) -> PasskeyDevice:
    options = client.post("/account/passkeys/register/options/").json()
    response = client.post(
        "/account/passkeys/register/",
        data=json.dumps({"name": name, "credential": authenticator.register(options)}),
        content_type="application/json",
    )
    assert response.status_code == 200, response.content
    return PasskeyDevice.objects.get(name=name)


def code_hashes(user: User) -> list[str]:
    return sorted(
        RecoveryCode.objects.filter(device__user=user).values_list("code_hash", flat=True)
    )


def test_the_security_page_links_to_confirm_steps(with_totp: Client) -> None:
    html = with_totp.get("/account/security/").content.decode()
    assert (
        '<a class="btn btn-danger btn-sm" id="disable-totp" href="/account/totp/disable/">' in html
    )
    assert 'id="regenerate-recovery-codes" href="/account/recovery-codes/regenerate/"' in html
    # Nothing on the page performs these without the step.
    assert 'action="/account/totp/disable/"' not in html
    assert 'action="/account/recovery-codes/regenerate/"' not in html


def test_removing_the_authenticator_app_asks_first(with_totp: Client, user: User) -> None:
    step = with_totp.get("/account/totp/disable/")
    assert step.status_code == 200 and "no-store" in step["Cache-Control"]
    html = step.content.decode()
    assert "Remove the authenticator app?" in html
    assert "Codes from your authenticator app will stop working" in html
    assert "This is your only second factor: two-factor sign-in turns off" in html
    assert "10 unused recovery codes stop working" in html
    assert user.email in html
    assert 'id="confirm-disable-totp"' in html and 'href="/account/security/#totp"' in html
    assert TOTPDevice.objects.filter(user=user, confirmed=True).exists()

    # Asking again through a POST shows the step and changes nothing either.
    asked = with_totp.post("/account/totp/disable/", {"confirm_ask": "1"})
    assert asked.status_code == 200 and "Remove the authenticator app?" in asked.content.decode()
    assert TOTPDevice.objects.filter(user=user).exists()

    done = with_totp.post("/account/totp/disable/")
    assert done.status_code == 302
    assert not TOTPDevice.objects.filter(user=user).exists()


def test_the_step_says_two_factor_stays_on_when_another_factor_remains(
    with_totp: Client, user: User, soft_authenticator: SoftAuthenticator
) -> None:
    add_passkey(with_totp, soft_authenticator, "Laptop")
    html = with_totp.get("/account/totp/disable/").content.decode()
    assert "Two-factor stays on with 1 passkey, and your recovery codes." in html
    passkey = PasskeyDevice.objects.get(name="Laptop")
    html = with_totp.get(f"/account/passkeys/{passkey.public_id}/delete/").content.decode()
    assert "Two-factor stays on with your authenticator app, and your recovery codes." in html


def test_removing_a_passkey_asks_first(
    client: Client, user: User, soft_authenticator: SoftAuthenticator
) -> None:
    client.force_login(user)
    passkey = add_passkey(client, soft_authenticator, "Work laptop")
    step = client.get(f"/account/passkeys/{passkey.public_id}/delete/")
    assert step.status_code == 200
    html = step.content.decode()
    assert "Remove the passkey “Work laptop”?" in html
    assert "This passkey will stop working for this account at once" in html
    assert 'id="confirm-remove-passkey"' in html
    assert PasskeyDevice.objects.filter(pk=passkey.pk).exists()
    page = client.get("/account/security/").content.decode()
    assert f'href="/account/passkeys/{passkey.public_id}/delete/"' in page

    assert client.post(f"/account/passkeys/{passkey.public_id}/delete/").status_code == 302
    assert not PasskeyDevice.objects.filter(pk=passkey.pk).exists()


def test_another_users_passkey_has_no_confirm_step(
    client: Client, user: User, soft_authenticator: SoftAuthenticator
) -> None:
    client.force_login(user)
    passkey = add_passkey(client, soft_authenticator, "Alice's key")
    intruder = Client()
    intruder.force_login(UserFactory.create(email="mallory@example.com"))
    response = intruder.get(f"/account/passkeys/{passkey.public_id}/delete/")
    assert response.status_code == 404
    assert "Alice" not in response.content.decode()


def test_regenerating_recovery_codes_asks_first(with_totp: Client, user: User) -> None:
    before = code_hashes(user)
    step = with_totp.get("/account/recovery-codes/regenerate/")
    assert step.status_code == 200
    html = step.content.decode()
    assert "Generate new recovery codes?" in html
    assert "Your current recovery codes (10 unused) stop working at once" in html
    assert 'id="confirm-regenerate-recovery-codes"' in html
    assert 'class="recovery-code"' not in html
    assert code_hashes(user) == before

    done = with_totp.post("/account/recovery-codes/regenerate/")
    assert done.status_code == 200 and 'class="recovery-code"' in done.content.decode()
    assert code_hashes(user) != before


def test_the_confirm_steps_need_a_recent_sign_in_too(with_totp: Client, user: User) -> None:
    session = with_totp.session
    session[SIGNED_IN_AT_KEY] = int(time.time()) - 11 * 60
    session.save()
    for path in ("/account/totp/disable/", "/account/recovery-codes/regenerate/"):
        response = with_totp.get(path)
        assert response.status_code == 302 and "reauth=1" in response["Location"], path


def test_without_a_factor_the_steps_send_back_to_the_page(client: Client, user: User) -> None:
    client.force_login(user)
    for path in ("/account/totp/disable/", "/account/recovery-codes/regenerate/"):
        response = client.get(path)
        assert response.status_code == 302 and response["Location"] == "/account/security/"


def test_the_step_for_the_only_factor_of_a_passkey_user(
    client: Client, user: User, soft_authenticator: SoftAuthenticator
) -> None:
    client.force_login(user)
    passkey = add_passkey(client, soft_authenticator, "Only key")
    html = client.get(f"/account/passkeys/{passkey.public_id}/delete/").content.decode()
    assert "This is your only second factor" in html
