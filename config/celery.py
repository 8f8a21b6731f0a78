"""The Celery application: Redis broker in production, eager tasks in the embedded default."""

import os
from typing import Any

from celery import Celery, signals

os.environ.setdefault("DJANGO_SETTINGS_MODULE", "config.settings")

app = Celery("latchkey")
app.config_from_object("django.conf:settings", namespace="CELERY")
app.autodiscover_tasks()


@signals.worker_init.connect
@signals.beat_init.connect
def _refuse_a_malformed_catalogue(**_: Any) -> None:
    """A worker or beat never runs with a catalogue the web processes would refuse."""
    from apikeys.catalogue import ensure_valid

    ensure_valid()
