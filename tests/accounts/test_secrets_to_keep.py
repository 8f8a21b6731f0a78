"""Secrets people must keep: recovery codes can be copied and downloaded without the codes
ever going into a URL or a request; the authenticator key is shown in groups of four with
a copy button."""

from __future__ import annotations

import re
from base64 import b32decode
from typing import Any

import pytest
from django.test import Client
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import User
from tests.accounts.helpers import confirmed_totp, totp_code, totp_secret_in
from tests.conftest import verified_client

pytestmark = pytest.mark.django_db

CODE = re.compile(r'class="recovery-code">([a-z2-7-]+)<')


@pytest.fixture
def signed_in(client: Client, user: User) -> Client:
    client.force_login(user)
    return client


def test_new_recovery_codes_come_with_copy_and_download(user: User) -> None:
    confirmed_totp(user)
    response = verified_client(user).post("/account/recovery-codes/regenerate/")
    assert response.status_code == 200 and "no-store" in response["Cache-Control"]
    html = response.content.decode()
    codes = CODE.findall(html)
    assert len(codes) == 10
    assert 'data-codes-copy="recovery-codes"' in html and 'id="copy-recovery-codes"' in html
    assert 'data-codes-download="recovery-codes"' in html and 'id="download-recovery-codes"' in html
    assert f'data-codes-for="{user.email}"' in html
    assert 'src="/static/js/account.js"' in html and "<script>" not in html
    # The download is made in the browser from the page: no link or form carries a code.
    for attribute in re.findall(r'(?:href|action|src)="([^"]*)"', html):
        assert not any(code in attribute for code in codes)


def test_the_first_codes_after_enrolment_come_with_copy_and_download(
    signed_in: Client, user: User, django_capture_on_commit_callbacks: Any
) -> None:
    signed_in.post("/account/totp/start/")
    secret = totp_secret_in(signed_in.get("/account/totp/").content.decode())
    with django_capture_on_commit_callbacks(execute=True):
        done = signed_in.post("/account/totp/", {"otp_token": totp_code(b32decode(secret).hex())})
    html = done.content.decode()
    assert len(CODE.findall(html)) == 10
    assert 'id="download-recovery-codes"' in html and 'id="copy-recovery-codes"' in html


def test_the_security_page_can_copy_codes_issued_with_a_first_passkey(signed_in: Client) -> None:
    html = signed_in.get("/account/security/").content.decode()
    assert 'data-codes-copy="new-recovery-codes-list"' in html
    assert 'data-codes-download="new-recovery-codes-list"' in html
    assert 'src="/static/js/account.js"' in html


def test_the_authenticator_key_is_shown_in_groups_of_four(signed_in: Client, user: User) -> None:
    signed_in.post("/account/totp/start/")
    html = signed_in.get("/account/totp/").content.decode()
    device = TOTPDevice.objects.get(user=user, confirmed=False)
    key = totp_secret_in(html)
    assert b32decode(key) == device.bin_key
    groups = re.search(r'id="totp-secret"[^>]*>(.*?)</code>', html, re.S)
    assert groups is not None
    shown = re.findall(r"<span>([A-Z2-7=]+)</span>", groups.group(1))
    assert "".join(shown) == key
    assert all(len(group) == 4 for group in shown[:-1]) and 1 <= len(shown[-1]) <= 4
    assert 'data-copy-from="totp-secret"' in html and 'id="copy-totp-secret"' in html
    assert 'src="/static/js/account.js"' in html
