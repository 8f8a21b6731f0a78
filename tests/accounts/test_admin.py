from __future__ import annotations

import pytest
from django.test import Client

from accounts import services
from accounts.models import User
from tests.accounts.helpers import totp_code

pytestmark = pytest.mark.django_db


def test_admin_lists_factors_without_showing_secrets(client: Client) -> None:
    admin = User.objects.create_superuser("root@latchkey.test")
    user = User.objects.create_user("someone@example.com")
    device = services.totp_enrolment_start(user=user)
    codes = services.totp_enrolment_confirm(user=user, token=totp_code(device)).recovery_codes
    client.force_login(admin)
    listing = client.get("/admin/accounts/recoverycodedevice/")
    assert listing.status_code == 200
    assert "someone@example.com" in listing.content.decode()
    assert client.get("/admin/accounts/passkeydevice/").status_code == 200
    totp_page = client.get(f"/admin/otp_totp/totpdevice/{device.pk}/change/").content.decode()
    assert device.key not in totp_page
    for code in codes:
        assert code not in listing.content.decode()
