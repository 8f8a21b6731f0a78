"""Adding a second factor signs out the user's other sessions (ADR 0077).

A session signed in with the link alone must not keep full access once the account is
protected by a factor: every other session of the user ends, and the session that added
the factor (and proved it) stays signed in.
"""

from __future__ import annotations

import json
from base64 import b32decode
from typing import Any

import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from tests.accounts.authenticator import SoftAuthenticator
from tests.accounts.helpers import totp_code, totp_secret_in
from tests.conftest import signed_in_client

pytestmark = pytest.mark.django_db


def signed_in(client: Client) -> bool:
    return client.get("/account/security/").status_code == 200


def test_setting_up_an_authenticator_app_signs_out_the_other_sessions(
    user: User, django_capture_on_commit_callbacks: Any
) -> None:
    laptop, phone = signed_in_client(user), signed_in_client(user)
    assert signed_in(laptop) and signed_in(phone)
    assert laptop.post("/account/totp/start/").status_code == 302
    html = laptop.get("/account/totp/").content.decode()
    secret = totp_secret_in(html)
    with django_capture_on_commit_callbacks(execute=True):
        done = laptop.post("/account/totp/", {"otp_token": totp_code(b32decode(secret).hex())})
    assert done.status_code == 200 and TOTPDevice.objects.filter(user=user).exists()
    assert signed_in(laptop)  # the session that proved the factor
    gone = phone.get("/account/security/")
    assert gone.status_code == 302 and gone["Location"].startswith("/login/")


def test_adding_a_passkey_signs_out_the_other_sessions(
    user: User, soft_authenticator: SoftAuthenticator
) -> None:
    laptop, phone = signed_in_client(user), signed_in_client(user)
    options = laptop.post("/account/passkeys/register/options/").json()
    added = laptop.post(
        "/account/passkeys/register/",
        data=json.dumps({"name": "Laptop", "credential": soft_authenticator.register(options)}),
        content_type="application/json",
    )
    assert added.status_code in (200, 201), added.content
    assert signed_in(laptop)
    assert not signed_in(phone)


def test_sessions_made_before_any_stamp_stay_valid(user: User) -> None:
    """Deploying the stamp signs nobody out: an empty stamp keeps Django's own hash."""
    client = signed_in_client(user)
    user.refresh_from_db()
    assert user.session_stamp == ""
    from django.utils.crypto import salted_hmac

    django_hash = salted_hmac(
        "django.contrib.auth.models.AbstractBaseUser.get_session_auth_hash",
        user.password,
        algorithm="sha256",
    ).hexdigest()
    assert user.get_session_auth_hash() == django_hash
    assert signed_in(client)
