"""The outbox (ADR 0076): a write that queues an email succeeds with the broker down and
the email follows; no task argument and no stored row carries a sign-in link in clear."""

from __future__ import annotations

import base64
import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import pytest
from django.core import mail
from django.test import Client

from apikeys.services import apikey_create
from config.celery import app
from orgs.models import Organization
from outbox import services
from outbox.models import Message
from tests.apikeys.guards.conftest import (  # noqa: F401 - fixtures
    RedisServer,
    free_port,
    own_redis_server,
    redis_server,
)

pytestmark = pytest.mark.django_db


def _fresh_connections() -> None:
    """Forget the app's connection and producer pools (they hold the broker's address)."""
    app.close()
    app.amqp._producer_pool = None


@contextmanager
def broker(url: str) -> Iterator[None]:
    """Publish tasks to the broker at `url` (not eagerly) for the duration."""
    saved = {
        name: app.conf[name]
        for name in (
            "broker_url",
            "task_always_eager",
            "broker_connection_timeout",
            "broker_connection_retry",
            "task_publish_retry",
        )
    }
    _fresh_connections()
    app.conf.update(
        broker_url=url,
        task_always_eager=False,
        broker_connection_timeout=0.5,
        broker_connection_retry=False,
        task_publish_retry=False,
    )
    try:
        yield
    finally:
        _fresh_connections()
        app.conf.update(saved)


def invite(org: Organization, capture: Any) -> Any:
    _, secret = apikey_create(
        org=org, name="Provisioner", environment="test", scopes=["members:write"]
    )
    with capture(execute=True):
        return Client().post(
            "/api/v1/members",
            {"email": "new.member@example.com", "role": "member"},
            content_type="application/json",
            headers={"Authorization": f"Bearer {secret}", "Idempotency-Key": "invite-1"},
        )


def test_a_write_that_queues_an_email_succeeds_with_the_broker_down_and_the_email_follows(
    org: Organization, django_capture_on_commit_callbacks: Any, caplog: pytest.LogCaptureFixture
) -> None:
    with broker(f"redis://127.0.0.1:{free_port()}/0"):  # nothing listens there
        response = invite(org, django_capture_on_commit_callbacks)
    assert response.status_code == 201, response.content
    assert mail.outbox == []
    message = Message.objects.get()
    assert message.sent_at is None
    assert b"invitations/" not in bytes(message.payload)  # sealed at rest
    assert any("Broker unreachable" in r.getMessage() for r in caplog.records)

    # The broker is back: the next delivery run sends it, once.
    assert services.deliver_due() == 1
    assert services.deliver_due() == 0
    [email] = mail.outbox
    assert email.to == ["new.member@example.com"] and "/invitations/" in email.body
    message.refresh_from_db()
    assert message.sent_at is not None and bytes(message.payload) == b""


def test_the_task_carries_only_the_messages_id(
    redis_server: RedisServer,  # noqa: F811
    user: Any,
    django_capture_on_commit_callbacks: Any,
) -> None:
    redis_server.ensure_running()
    url = redis_server.url.rsplit("/", 1)[0] + "/7"
    import redis

    conn = redis.Redis.from_url(url)
    conn.flushdb()
    with broker(url), django_capture_on_commit_callbacks(execute=True):
        assert Client().post("/login/", {"email": user.email}).status_code == 200
    message = Message.objects.get()
    queued = [json.loads(raw) for raw in conn.lrange("celery", 0, -1)]
    assert [q["headers"]["task"] for q in queued] == ["outbox.tasks.deliver_message"]
    args, kwargs, _ = json.loads(base64.b64decode(queued[0]["body"]))
    assert (args, kwargs) == ([message.pk], {})
    # Nothing the broker holds carries the sign-in link.
    for key in conn.keys("*"):
        if conn.type(key) == b"list":
            for raw in conn.lrange(key, 0, -1):
                assert b"/login/magic/" not in raw
    conn.flushdb()
    services.deliver(message.pk)
    assert "/login/magic/" in mail.outbox[-1].body


def test_a_failed_send_is_retried_later_with_backoff(
    user: Any, django_capture_on_commit_callbacks: Any, settings: Any
) -> None:
    settings.EMAIL_BACKEND = "tests.outbox.test_outbox.RefusingBackend"
    with django_capture_on_commit_callbacks(execute=True):
        Client().post("/login/", {"email": user.email})
    message = Message.objects.get()
    assert message.sent_at is None and message.attempts == 1
    assert "SMTP refused" in message.last_error
    assert services.deliver_due() == 0  # not due yet
    settings.EMAIL_BACKEND = "django.core.mail.backends.locmem.EmailBackend"
    Message.objects.filter(pk=message.pk).update(next_attempt_at=message.created_at)
    assert services.deliver_due() == 1
    assert "/login/magic/" in mail.outbox[-1].body


class RefusingBackend:
    def __init__(self, *args: Any, **kwargs: Any) -> None:
        pass

    def send_messages(self, messages: Any) -> int:
        raise OSError("SMTP refused the connection")
