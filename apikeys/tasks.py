"""Periodic work of the API guards (scheduled by CELERY_BEAT_SCHEDULE in settings).

- `fold_usage`: fold the live usage counters into the database (every 30 s, so at least
  once a minute); a Celery worker also folds once more when it shuts down.
- `purge_idempotency_records`: delete idempotency records past their 24 hours.
"""

from __future__ import annotations

import logging
from typing import Any

from celery import shared_task
from celery.signals import worker_shutting_down

from apikeys import usage
from apikeys.idempotency import purge_expired

logger = logging.getLogger("apikeys.tasks")


@shared_task(ignore_result=True)
def fold_usage() -> int:
    """Fold pending usage counters into KeyUsageHour rows; returns the requests folded."""
    return usage.fold()


@shared_task(ignore_result=True)
def apply_pending_invalidations() -> int:
    """Get the cache invalidations that could not reach Redis through (ADR 0078); a Redis
    still down leaves them for the next run."""
    from apikeys import keycache, redisconn

    try:
        return keycache.apply_pending()
    except redisconn.REDIS_ERRORS:
        return 0


@shared_task(ignore_result=True)
def purge_idempotency_records() -> int:
    """Delete expired idempotency records and old usage-batch markers."""
    return purge_expired() + usage.purge_fold_markers()


@worker_shutting_down.connect
def _fold_on_shutdown(**_: Any) -> None:
    """A worker stopping (SIGTERM, Ctrl-C) folds what is pending, so nothing waits on it."""
    try:
        folded = usage.fold()
        logger.info("Folded %d pending requests into usage before shutting down.", folded)
    except Exception:
        logger.exception("Folding usage counters at worker shutdown failed.")
