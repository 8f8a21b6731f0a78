"""Messages stored with the change that caused them, sent once the broker takes them."""

from __future__ import annotations

from django.db import models
from django.utils import timezone


class Message(models.Model):
    """One message to send (an email today; webhooks later), sealed at rest.

    `payload` is AES-GCM sealed JSON (`outbox.services`): a sign-in link in an email is a
    secret, so it is never stored in clear, and it is emptied once the message is sent.
    """

    kind = models.CharField(max_length=32)
    payload = models.BinaryField()
    created_at = models.DateTimeField(default=timezone.now)
    next_attempt_at = models.DateTimeField(default=timezone.now)
    attempts = models.PositiveIntegerField(default=0)
    sent_at = models.DateTimeField(null=True, blank=True)
    # Why the last attempt failed (the exception's type and a short message, no payload).
    last_error = models.CharField(max_length=300, blank=True)

    class Meta:
        indexes = [models.Index(fields=["sent_at", "next_attempt_at"], name="outbox_due")]

    def __str__(self) -> str:
        state = "sent" if self.sent_at else "pending"
        return f"{self.kind} message {self.pk} ({state})"
