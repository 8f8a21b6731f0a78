from __future__ import annotations

from celery import shared_task

from outbox import services


@shared_task(ignore_result=True)
def deliver_message(message_id: int) -> None:
    """Send one outbox message (its id only: the payload stays sealed in the database)."""
    services.deliver(message_id)


@shared_task(ignore_result=True)
def deliver_due() -> int:
    """Send what the broker never took and the retries that are due."""
    return services.deliver_due()
