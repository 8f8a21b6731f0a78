"""The outbox (ADR 0076): a message is stored in the same transaction as the change that
causes it, and handed to the broker after the commit. The task carries only its id.

- `enqueue(kind, payload)`: store it sealed; on commit ask the broker to run `deliver`.
  A broker that is down is logged (at most every few seconds) and the message waits.
- `deliver(message_id)`: send it through the handler registered for its kind (under a row
  lock, at most once), mark it sent and empty its payload; a failed attempt is retried
  later with backoff.
- `deliver_due()`: send every message whose time has come (the beat task
  `outbox.tasks.deliver_due` every 30 s, and `manage.py deliver_outbox`): what the broker
  never took, and the retries.
"""

from __future__ import annotations

import json
import logging
import secrets
from collections.abc import Callable
from datetime import timedelta
from typing import Any

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from django.conf import settings
from django.db import transaction
from django.utils import timezone

from outbox.models import Message

logger = logging.getLogger("outbox")

Handler = Callable[[dict[str, Any]], None]
_handlers: dict[str, Handler] = {}

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


def register(kind: str, handler: Handler) -> None:
    """Send messages of `kind` with `handler(payload)` (an app's `ready()` registers)."""
    _handlers[kind] = handler


# --- sealing ------------------------------------------------------------------------------


def _key() -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=None, info=b"latchkey outbox v1").derive(
        settings.SECRET_KEY.encode()
    )


def seal(payload: dict[str, Any], *, kind: str) -> bytes:
    nonce = secrets.token_bytes(12)
    data = json.dumps(payload, separators=(",", ":")).encode()
    return nonce + AESGCM(_key()).encrypt(nonce, data, kind.encode())


def unseal(sealed: bytes, *, kind: str) -> dict[str, Any]:
    nonce, data = sealed[:12], sealed[12:]
    payload: dict[str, Any] = json.loads(AESGCM(_key()).decrypt(nonce, data, kind.encode()))
    return payload


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
    """Send message `message_id` if it is still pending; True once it is sent."""
    with transaction.atomic():
        message = (
            Message.objects.select_for_update(skip_locked=True)
            .filter(pk=message_id, sent_at__isnull=True)
            .first()
        )
        if message is None:
            return False
        handler = _handlers.get(message.kind)
        try:
            if handler is None:
                raise LookupError(f"No outbox handler for {message.kind!r}.")
            handler(unseal(bytes(message.payload), kind=message.kind))
        except Exception as exc:
            message.attempts += 1
            message.last_error = f"{type(exc).__name__}: {exc}"[:300]
            wait = BACKOFF[min(message.attempts, len(BACKOFF)) - 1]
            message.next_attempt_at = timezone.now() + wait
            if message.attempts >= MAX_ATTEMPTS:
                logger.error(
                    "Outbox message %s dropped after %s attempts", message.pk, MAX_ATTEMPTS
                )
                message.sent_at = timezone.now()
                message.payload = b""
            message.save(
                update_fields=["attempts", "last_error", "next_attempt_at", "sent_at", "payload"]
            )
            logger.warning("Outbox message %s not sent: %s", message.pk, message.last_error)
            return False
        message.sent_at = timezone.now()
        message.payload = b""
        message.save(update_fields=["sent_at", "payload"])
    return True


def deliver_due(*, limit: int = DUE_BATCH) -> int:
    """Send the pending messages whose time has come; returns how many were sent."""
    due = list(
        Message.objects.filter(sent_at__isnull=True, next_attempt_at__lte=timezone.now())
        .order_by("next_attempt_at", "pk")
        .values_list("pk", flat=True)[:limit]
    )
    return sum(1 for message_id in due if deliver(message_id))
