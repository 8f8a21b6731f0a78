from __future__ import annotations

from celery import shared_task

from outbox import services


@shared_task(ignore_result=True)
def deliver_message(message_id: int) -> None:
    """Send one outbox message (its id only: the payload stays sealed in the database)."""
    services.deliver(message_id)


@shared_task(ignore_result=True)
def deliver_due() -> int:
    """Hand what the broker never took and the retries that are due to the workers, one
    task each: a slow receiver then holds one worker for one message, not the whole run."""
    return services.deliver_due(dispatch=deliver_message.delay)
