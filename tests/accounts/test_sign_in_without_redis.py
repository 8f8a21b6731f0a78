"""Sign-in through a Redis outage (SPEC 15): the sign-in throttles fail open with an error
logged; `POST /login/` and the magic link's POST answer as usual, never a 500."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from accounts.models import User
from tests.accounts.helpers import last_magic_link_token
from tests.apikeys.guards.conftest import (  # noqa: F401 - fixtures
    RedisServer,
    own_redis_server,
    redis_server,
    use_redis,
)

pytestmark = [pytest.mark.django_db, pytest.mark.stops_redis]


def test_sign_in_works_while_redis_is_down(
    use_redis: RedisServer,  # noqa: F811
    user: User,
    caplog: pytest.LogCaptureFixture,
    django_capture_on_commit_callbacks: Any,
) -> None:
    client = Client()
    use_redis.stop()
    try:
        with caplog.at_level(logging.ERROR, logger="accounts.throttles"):
            with django_capture_on_commit_callbacks(execute=True):
                sent = client.post("/login/", {"email": user.email})
            token = last_magic_link_token()
            confirm = client.get(f"/login/magic/{token}/")
            signed_in = client.post(f"/login/magic/{token}/")
    finally:
        use_redis.start()
    assert sent.status_code == 200
    assert len(mail.outbox) == 1
    assert confirm.status_code == 200
    assert signed_in.status_code == 302
    assert client.session.get("_auth_user_id") == str(user.pk)
    messages = [r.getMessage() for r in caplog.records if r.name == "accounts.throttles"]
    assert any("fail open" in message for message in messages)
