from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import pytest
from django.test import Client, override_settings

from tests.accounts.authenticator import SoftAuthenticator
from tests.accounts.helpers import last_magic_link_token

TEST_ORIGIN = "http://testserver"


@pytest.fixture
def webauthn_testserver() -> Iterator[None]:
    """The relying party as Django's test client sees it (host `testserver`)."""
    with override_settings(WEBAUTHN_RP_ID="testserver", WEBAUTHN_ORIGINS=[TEST_ORIGIN]):
        yield


@pytest.fixture
def soft_authenticator(webauthn_testserver: None) -> SoftAuthenticator:
    return SoftAuthenticator(origin=TEST_ORIGIN)


@pytest.fixture
def magic_sign_in(django_capture_on_commit_callbacks: Any) -> Callable[..., Any]:
    """Request a link for `email` with `client`, then confirm it: the response of the POST."""

    def sign_in(client: Client, email: str, *, next_url: str = "") -> Any:
        data = {"email": email, **({"next": next_url} if next_url else {})}
        with django_capture_on_commit_callbacks(execute=True):
            sent = client.post("/login/", data)
        assert sent.status_code == 200, sent.status_code
        token = last_magic_link_token(email)
        return client.post(f"/login/magic/{token}/")

    return sign_in
