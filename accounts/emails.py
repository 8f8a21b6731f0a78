"""Templated email, stored in the outbox with the change that causes it and sent after
the transaction commits (`outbox.services`, ADR 0076).

Every email has a text and an HTML template: `<template>.txt` and `<template>.html`,
plus `<template>_subject.txt`. The context must be JSON-serialisable (it is sealed into
the outbox row). Secrets other than a sign-in or invitation link never go into an email;
those links exist in clear only in the email itself: sealed in the outbox, emptied once
sent, never in a task argument.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string

EMAIL = "email"


def queue_email(*, to: Sequence[str], template: str, context: Mapping[str, Any]) -> None:
    """Send this email once the current transaction commits, whatever the broker's state."""
    from outbox.services import enqueue

    enqueue(kind=EMAIL, payload={"to": list(to), "template": template, "context": dict(context)})


def send_email(payload: dict[str, Any]) -> None:
    """The outbox handler of emails: render `<template>_subject.txt`, `.txt` and `.html`
    and send one message."""
    ctx = {"site_url": settings.SITE_URL, "product_name": "Latchkey", **payload["context"]}
    template = payload["template"]
    subject = " ".join(render_to_string(f"{template}_subject.txt", ctx).split())
    text = render_to_string(f"{template}.txt", ctx)
    html = render_to_string(f"{template}.html", ctx)
    message = EmailMultiAlternatives(subject=subject, body=text, to=list(payload["to"]))
    message.attach_alternative(html, "text/html")
    message.send()
