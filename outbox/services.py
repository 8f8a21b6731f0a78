"""The outbox (ADR 0076): a message is stored in the same transaction as the change that
causes it, and handed to the broker after the commit. The task carries only its id.

- `enqueue(kind, payload)`: store it sealed; on commit ask the broker to run `deliver`.
  A broker that is down is logged (at most every few seconds) and the message waits.
- `deliver(message_id)`: claim it, send it through the handler registered for its kind
  with no transaction open, mark it sent and empty its payload; a failed attempt is
  retried later with backoff. Delivery is at least once (a sender that dies mid-send
  leaves a claim that expires).
- `deliver_due()`: send every message whose time has come (the beat task
  `outbox.tasks.deliver_due` every 30 s, and `manage.py deliver_outbox`; without a beat,
  a thread of the process that saw a failure): what the broker never took, and the
  retries. Sent messages are forgotten after a week.
"""

from __future__ import annotations

import json
import logging
import re
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from config.periodic import Periodic
from outbox.models import Message

logger = logging.getLogger("outbox")

Handler = Callable[[dict[str, Any]], None]
_handlers: dict[str, Handler] = {}
# A kind's own retry schedule and attempt budget, where it is not the default below.
_policies: dict[str, tuple[tuple[timedelta, ...], int]] = {}

# Waits after the 1st, 2nd, ... failed attempt; the last one repeats.
BACKOFF = (
    timedelta(seconds=30),
    timedelta(minutes=5),
    timedelta(minutes=30),
    timedelta(hours=2),
    timedelta(hours=6),
)
MAX_ATTEMPTS = 12
DUE_BATCH = 200
# How long a claimed message is left to its sender before another run may send it.
CLAIM_LEASE = timedelta(minutes=5)
# Sent (or dropped) messages are forgotten after this; their payload is emptied at once.
KEEP_SENT = timedelta(days=7)
PURGE_BATCH = 1000


def register(
    kind: str,
    handler: Handler,
    *,
    backoff: tuple[timedelta, ...] | None = None,
    max_attempts: int | None = None,
) -> None:
    """Send messages of `kind` with `handler(payload)` (an app's `ready()` registers).

    `backoff` and `max_attempts` replace the default schedule for this kind (webhooks
    follow the Standard Webhooks schedule, docs/adr/0083-webhooks.md)."""
    _handlers[kind] = handler
    _policies[kind] = (backoff or BACKOFF, max_attempts or MAX_ATTEMPTS)


def policy(kind: str) -> tuple[tuple[timedelta, ...], int]:
    """The retry schedule and attempt budget of `kind`."""
    return _policies.get(kind, (BACKOFF, MAX_ATTEMPTS))


# --- sealing ------------------------------------------------------------------------------


def _key(secret: str) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"latchkey outbox v1").derive(
        secret.encode()
    )


def seal(payload: dict[str, Any], *, kind: str) -> bytes:
    nonce = secrets.token_bytes(12)
    data = json.dumps(payload, separators=(",", ":")).encode()
    return nonce + AESGCM(_key(settings.SECRET_KEY)).encrypt(nonce, data, kind.encode())


def unseal(sealed: bytes, *, kind: str) -> dict[str, Any]:
    """Open a sealed payload with SECRET_KEY, or one of SECRET_KEY_FALLBACKS: a message
    queued before a key rotation is still sent after it."""
    nonce, data = sealed[:12], sealed[12:]
    secrets_to_try = [settings.SECRET_KEY, *getattr(settings, "SECRET_KEY_FALLBACKS", [])]
    for secret in secrets_to_try:
        try:
            opened = AESGCM(_key(secret)).decrypt(nonce, data, kind.encode())
        except InvalidTag:
            continue
        payload: dict[str, Any] = json.loads(opened)
        return payload
    raise InvalidTag("The message was sealed with a key this site no longer has.")


# --- enqueue and deliver ------------------------------------------------------------------


class _Throttled:
    """Log a broker outage at most once per interval."""

    def __init__(self, interval: float = 10.0) -> None:
        self.interval = interval
        self.last = 0.0

    def error(self, message: str, exc: BaseException) -> None:
        import time

        now = time.monotonic()
        if now - self.last >= self.interval:
            self.last = now
            logger.error("%s (%s: %s)", message, type(exc).__name__, exc)


_broker_errors = _Throttled()


def enqueue(*, kind: str, payload: dict[str, Any]) -> Message:
    """Store a message of `kind` in the current transaction; send it after the commit."""
    if kind not in _handlers:
        raise LookupError(f"No outbox handler for {kind!r}.")
    message = Message.objects.create(kind=kind, payload=seal(payload, kind=kind))
    message_id = message.pk
    transaction.on_commit(lambda: _hand_to_broker(message_id))
    _wake_retrier()
    return message


def _hand_to_broker(message_id: int) -> None:
    from outbox.tasks import deliver_message

    try:
        deliver_message.delay(message_id)
    except Exception as exc:  # the broker is down or refuses: the message waits
        _broker_errors.error(
            "Broker unreachable: the message waits in the outbox for the next delivery run",
            exc,
        )


def deliver(message_id: int) -> bool:
    """Send message `message_id` if it is still pending and due; True once it is sent.

    Three short steps, so no transaction (and on SQLite no write lock) is held while the
    handler talks to a mail server: claim the message with one conditional UPDATE that
    moves its next attempt a lease ahead (a concurrent delivery run then skips it), send,
    record the outcome. A process that dies mid-send leaves the claim to expire, and the
    message is sent again after the lease: delivery is at least once.
    """
    now = timezone.now()
    claimed = Message.objects.filter(
        pk=message_id, sent_at__isnull=True, next_attempt_at__lte=now
    ).update(next_attempt_at=now + CLAIM_LEASE)
    if not claimed:
        return False
    message = Message.objects.get(pk=message_id)
    try:
        handler = _handlers.get(message.kind)
        if handler is None:
            raise LookupError(f"No outbox handler for {message.kind!r}.")
        handler(unseal(bytes(message.payload), kind=message.kind))
    except BaseException as exc:
        _record_failure(message, exc)
        if not isinstance(exc, Exception):
            raise  # a worker being stopped: the attempt is recorded, the stop goes on
        return False
    Message.objects.filter(pk=message_id).update(sent_at=timezone.now(), payload=b"")
    return True


def _record_failure(message: Message, exc: BaseException) -> None:
    backoff, max_attempts = policy(message.kind)
    message.attempts += 1
    message.last_error = describe_error(exc)
    wait = backoff[min(message.attempts, len(backoff)) - 1]
    message.next_attempt_at = timezone.now() + wait
    if message.attempts >= max_attempts:
        logger.error("Outbox message %s dropped after %s attempts", message.pk, max_attempts)
        message.sent_at = timezone.now()
        message.payload = b""
    message.save(update_fields=["attempts", "last_error", "next_attempt_at", "sent_at", "payload"])
    logger.warning("Outbox message %s not sent: %s", message.pk, message.last_error)
    _wake_retrier()


_ADDRESS = re.compile(r"[^\s'\"<>(),;:]+@[^\s'\"<>(),;:]+")
_LINK = re.compile(r"https?://\S+")


def describe_error(exc: BaseException) -> str:
    """The exception's type and message without addresses or links (a refused recipient's
    address and a message's link are personal data or secrets)."""
    text = f"{type(exc).__name__}: {exc}"
    text = _LINK.sub("<link>", _ADDRESS.sub("<address>", text))
    return text[:300]


def deliver_due(*, limit: int = DUE_BATCH, dispatch: Callable[[int], object] | None = None) -> int:
    """Send the pending messages whose time has come; returns how many were sent (or, with
    `dispatch`, handed on: `dispatch(message_id)` queues each for a worker, whose
    `deliver` claims it, so a message queued twice is still sent once).

    Also forgets messages sent (or dropped) more than `KEEP_SENT` ago: their payload is
    already empty, and the row only told that they went.
    """
    now = timezone.now()
    due = list(
        Message.objects.filter(sent_at__isnull=True, next_attempt_at__lte=now)
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    if dispatch is not None:
        for message_id in due:
            dispatch(message_id)
        sent = len(due)
    else:
        sent = sum(1 for message_id in due if deliver(message_id))
    old = Message.objects.filter(sent_at__lt=now - KEEP_SENT).values_list("pk", flat=True)
    Message.objects.filter(pk__in=list(old[:PURGE_BATCH])).delete()
    return sent


def pending() -> bool:
    return Message.objects.filter(sent_at__isnull=True).exists()


# --- retries without a beat (the embedded default) ----------------------------------------


def _retry_if_pending() -> None:
    if pending():
        deliver_due()


_retrier = Periodic(
    "outbox-retrier",
    _retry_if_pending,
    lambda: float(getattr(settings, "LATCHKEY_OUTBOX_RETRY_SECONDS", 30)),
)


def _wake_retrier() -> None:
    """Without a worker and beat (eager tasks), retries run on a thread of this process."""
    if getattr(settings, "CELERY_TASK_ALWAYS_EAGER", False):
        _retrier.ensure_started()
