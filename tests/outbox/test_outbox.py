"""The outbox (ADR 0076): a write that queues an email succeeds with the broker down and
the email follows; no task argument and no stored row carries a sign-in link in clear."""

from __future__ import annotations

import base64
import json
import smtplib
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

import pytest
from celery._state import _register_app
from django.core import mail
from django.db import transaction
from django.test import Client
from django.utils import timezone

from apikeys.services import apikey_create
from config.celery import app
from orgs.actors import Actor
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
    # close() also drops the app from Celery's active apps: tasks imported afterwards
    # (autodiscovery, `run_scheduled`) would not be registered on it.
    _register_app(app)


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
        actor=Actor.system(),
        org=org,
        name="Provisioner",
        environment="test",
        scopes=["members:write"],
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


# --- delivery runs outside any transaction, survives stops, forgets what it sent ----------


def _store(payload: dict[str, Any] | None = None) -> Message:
    return Message.objects.create(
        kind="test", payload=services.seal(payload or {"n": 1}, kind="test")
    )


@pytest.fixture
def test_kind() -> Iterator[list[dict[str, Any]]]:
    """A message kind whose handler records what it sent (and can be told to fail)."""
    sent: list[dict[str, Any]] = []

    def handler(payload: dict[str, Any]) -> None:
        failure = payload.get("raise")
        if failure == "exit":
            raise SystemExit(1)
        if failure == "refused":
            raise smtplib.SMTPRecipientsRefused({"alice@example.com": (550, b"No such user")})
        sent.append(payload)

    services.register("test", handler)
    yield sent
    services._handlers.pop("test", None)


@pytest.mark.django_db(transaction=True)
def test_the_handler_runs_with_no_transaction_open(test_kind: list[dict[str, Any]]) -> None:
    seen: list[bool] = []

    def handler(payload: dict[str, Any]) -> None:
        seen.append(transaction.get_connection().in_atomic_block)

    services.register("test", handler)
    message = _store()
    assert services.deliver(message.pk) is True
    assert seen == [False]  # no lock is held while a mail server is slow


def test_a_message_being_sent_is_not_sent_again_by_a_concurrent_run(
    test_kind: list[dict[str, Any]],
) -> None:
    message = _store()
    inner: list[bool] = []

    def handler(payload: dict[str, Any]) -> None:
        inner.append(services.deliver(message.pk))  # a second run meanwhile

    services.register("test", handler)
    assert services.deliver(message.pk) is True
    assert inner == [False]


def test_a_stopped_worker_records_the_attempt_and_stops(test_kind: list[dict[str, Any]]) -> None:
    message = _store({"raise": "exit"})
    with pytest.raises(SystemExit):
        services.deliver(message.pk)
    message.refresh_from_db()
    assert message.sent_at is None and message.attempts == 1
    assert message.next_attempt_at > timezone.now()  # tried again later, not lost


def test_a_refused_recipient_is_not_written_into_last_error(
    test_kind: list[dict[str, Any]],
) -> None:
    message = _store({"raise": "refused"})
    assert services.deliver(message.pk) is False
    message.refresh_from_db()
    assert message.last_error.startswith("SMTPRecipientsRefused")
    assert "alice@example.com" not in message.last_error and "<address>" in message.last_error


def test_a_message_sealed_before_a_secret_key_rotation_is_still_sent(
    test_kind: list[dict[str, Any]], settings: Any
) -> None:
    message = _store({"n": 7})
    old = settings.SECRET_KEY
    settings.SECRET_KEY = "a-new-secret-key-" + "x" * 40
    settings.SECRET_KEY_FALLBACKS = [old]
    assert services.deliver(message.pk) is True
    assert test_kind == [{"n": 7}]


def test_a_message_sealed_with_a_forgotten_key_fails_without_being_lost(
    test_kind: list[dict[str, Any]], settings: Any
) -> None:
    message = _store()
    settings.SECRET_KEY = "a-new-secret-key-" + "x" * 40
    settings.SECRET_KEY_FALLBACKS = []
    assert services.deliver(message.pk) is False
    message.refresh_from_db()
    assert message.sent_at is None and message.last_error.startswith("InvalidTag")


def test_sent_messages_are_forgotten_after_a_week(test_kind: list[dict[str, Any]]) -> None:
    now = timezone.now()
    old = _store()
    recent = _store()
    waiting = _store({"raise": "refused"})
    Message.objects.filter(pk=old.pk).update(sent_at=now - timedelta(days=8), payload=b"")
    Message.objects.filter(pk=recent.pk).update(sent_at=now - timedelta(days=6), payload=b"")
    Message.objects.filter(pk=waiting.pk).update(created_at=now - timedelta(days=30))
    services.deliver_due()
    assert set(Message.objects.values_list("pk", flat=True)) == {recent.pk, waiting.pk}


def test_without_a_beat_a_failed_message_starts_the_retrier_of_this_process(
    test_kind: list[dict[str, Any]], settings: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings.CELERY_TASK_ALWAYS_EAGER = True
    settings.LATCHKEY_OUTBOX_RETRY_SECONDS = 3600  # the test runs the job itself
    monkeypatch.setattr("config.periodic.database_in_memory", lambda: False)
    retrier = services._retrier
    monkeypatch.setattr(retrier, "_thread", None)
    monkeypatch.setattr(retrier, "_stop", threading.Event())
    message = _store({"raise": "refused"})
    services.deliver(message.pk)
    thread = retrier._thread
    assert thread is not None
    try:
        assert thread.is_alive()
        # Its job sends what has become due.
        Message.objects.filter(pk=message.pk).update(
            payload=services.seal({"n": 2}, kind="test"), next_attempt_at=timezone.now()
        )
        retrier.job()
        assert test_kind == [{"n": 2}]
    finally:
        retrier._stop.set()
        thread.join(timeout=5)


def test_a_delivery_run_can_hand_each_message_to_a_worker(
    test_kind: list[dict[str, Any]],
) -> None:
    """The beat's run queues one task per due message instead of sending them in turn; a
    message queued twice is still sent once."""
    first, second = _store({"n": 1}), _store({"n": 2})
    queued: list[int] = []
    assert services.deliver_due(dispatch=queued.append) == 2
    assert sorted(queued) == [first.pk, second.pk] and test_kind == []
    for message_id in queued + queued:  # the workers, each task twice
        services.deliver(message_id)
    assert sorted(p["n"] for p in test_kind) == [1, 2]
