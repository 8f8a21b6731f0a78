from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from outbox.services import deliver_due


class Command(BaseCommand):
    help = "Send the outbox messages that are due (what the broker never took, and retries)."

    def handle(self, *args: Any, **options: Any) -> None:
        sent = deliver_due()
        self.stdout.write(f"Sent {sent} outbox message(s).")
