"""Sign-in through a Redis outage (docs/product.md#reliability): the sign-in throttles
count in each process, with an error logged; `POST /login/` and the magic link's POST
answer as usual, never a 500."""

from __future__ import annotations

import logging
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from accounts import throttles
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
    assert any("count in this process" in message for message in messages)


def test_while_redis_is_down_sign_in_emails_are_still_limited(
    use_redis: RedisServer,  # noqa: F811
    user: User,
    settings: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    """The throttles count in the process meanwhile: not one email per request."""
    settings.MAGIC_LINK_RATE_PER_EMAIL = "3/h"
    settings.MAGIC_LINK_RATE_PER_IP = "100/h"
    throttles.reset_local()
    use_redis.stop()
    try:
        with django_capture_on_commit_callbacks(execute=True):
            statuses = [
                Client().post("/login/", {"email": user.email}).status_code for _ in range(6)
            ]
    finally:
        use_redis.start()
        throttles.reset_local()
    assert statuses == [200, 200, 200, 429, 429, 429]
    assert len(mail.outbox) == 3


def test_the_stand_in_counts_windows_and_stays_bounded() -> None:
    windows = throttles.LocalWindows()
    assert [windows.hit("g", "a", "2/m", now=60.0) for _ in range(3)] == [False, False, True]
    assert windows.hit("g", "b", "2/m", now=60.0) is False  # another caller
    assert windows.hit("g", "a", "2/m", now=120.0) is False  # the next minute
    windows.MAX_ENTRIES = 3
    for n in range(10):
        windows.hit("g", f"caller-{n}", "2/m", now=180.0)
    assert len(windows._counts) <= 3
