"""`manage.py flush_usage`: fold the live usage counters into the database now.

The Celery beat task does this every 30 seconds; `make stack` runs it once more when it
stops, and operators can run it before reading usage straight from the database.
"""

from __future__ import annotations

from typing import Any

from django.core.management.base import BaseCommand

from apikeys import usage


class Command(BaseCommand):
    help = "Fold pending API usage counters (Redis or this process) into the database."

    def handle(self, *args: Any, **options: Any) -> None:
        folded = usage.fold()
        self.stdout.write(f"Folded {folded} requests into usage.")
