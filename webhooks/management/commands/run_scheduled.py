"""`manage.py run_scheduled --once`: run every periodic task of the beat schedule once,
now, in this process (usage fold, idempotency purge, expiry notifications, outbox and
webhook retries that are due), as a cron job would without Celery beat."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.core.management.base import BaseCommand, CommandError, CommandParser

from config.celery import app


class Command(BaseCommand):
    help = "Run every periodic task once, now."

    def add_arguments(self, parser: CommandParser) -> None:
        parser.add_argument("--once", action="store_true", help="Run each task once and exit.")

    def handle(self, *args: Any, **options: Any) -> None:
        if not options["once"]:
            raise CommandError("Only --once is supported; use Celery beat to run on a schedule.")
        app.loader.import_default_modules()  # autodiscovery registers every app's tasks
        for name, entry in settings.CELERY_BEAT_SCHEDULE.items():
            # Applied locally: the task runs here, now, without the broker.
            result = app.tasks[str(entry["task"])].apply().get()
            self.stdout.write(f"{name}: {result if result is not None else 'done'}")
