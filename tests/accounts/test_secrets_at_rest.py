from __future__ import annotations

import json
import re
from typing import Any

import pytest
from django.core import mail
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from tests.accounts.authenticator import SoftAuthenticator
from tests.accounts.db_scan import find_in_database
from tests.accounts.helpers import last_magic_link_token, totp_code

pytestmark = pytest.mark.django_db

CODE = re.compile(r'class="recovery-code">([a-z2-7-]+)<')


def test_no_sign_in_link_or_recovery_code_is_stored_in_clear(
    client: Client,
    soft_authenticator: SoftAuthenticator,
    django_capture_on_commit_callbacks: Any,
) -> None:
    tokens: list[str] = []
    codes: list[str] = []

    def sign_in_link(email: str, *, use: bool = True) -> None:
        with django_capture_on_commit_callbacks(execute=True):
            client.post("/login/", {"email": email})
        tokens.append(last_magic_link_token(email))
        if use:
            client.post(f"/login/magic/{tokens[-1]}/")

    email = "journey@example.com"
    sign_in_link(email)  # sign-up
    user = User.objects.get(email=email)

    with django_capture_on_commit_callbacks(execute=True):
        client.post("/account/totp/start/")
        device = TOTPDevice.objects.get(user=user)
        page = client.post("/account/totp/", {"otp_token": totp_code(device)})
    codes += CODE.findall(page.content.decode())

    options = client.post("/account/passkeys/register/options/").json()
    with django_capture_on_commit_callbacks(execute=True):
        client.post(
            "/account/passkeys/register/",
            data=json.dumps({"name": "Key", "credential": soft_authenticator.register(options)}),
            content_type="application/json",
        )
        regenerated = client.post("/account/recovery-codes/regenerate/")
    codes += CODE.findall(regenerated.content.decode())
    assert len(codes) == 20

    client.post("/logout/")
    sign_in_link(email)
    with django_capture_on_commit_callbacks(execute=True):
        done = client.post("/login/2fa/", {"otp_token": codes[10]})
    assert done.status_code == 302
    assert client.session["_auth_user_id"] == str(user.pk)

    client.post("/logout/")
    sign_in_link(email, use=False)  # requested, never used

    assert len(set(tokens)) == 3
    assert all(any(t in m.body for m in mail.outbox) for t in tokens)  # real needles
    needles = tokens + codes + [c.replace("-", "") for c in codes]
    assert find_in_database(needles) == []


def test_the_scan_finds_a_planted_value_in_a_table_and_in_a_session(
    client: Client, user: User
) -> None:
    user.full_name = "planted-needle-1"
    user.save()
    session = client.session
    session["note"] = "planted-needle-2"
    session.save()
    hits = find_in_database(["planted-needle-1", "planted-needle-2", "absent-needle"])
    assert any(h.startswith("accounts_user.full_name") for h in hits)
    assert any(h.startswith("django_session.session_data(decoded)") for h in hits)
    assert len(hits) == 2
