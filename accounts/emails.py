"""Templated email, sent by a Celery task queued after the transaction commits.

Every email has a text and an HTML template: `<template>.txt` and `<template>.html`,
plus `<template>_subject.txt`. The context must be JSON-serialisable (it crosses the
broker). Secrets other than a sign-in or invitation link never go into an email.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.db import transaction


def queue_email(*, to: Sequence[str], template: str, context: Mapping[str, Any]) -> None:
    from accounts.tasks import send_templated_email

    recipients = list(to)
    ctx = dict(context)
    transaction.on_commit(lambda: send_templated_email.delay(recipients, template, ctx))
