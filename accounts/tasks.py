from __future__ import annotations

from typing import Any

from celery import shared_task
from django.conf import settings
from django.core.mail import EmailMultiAlternatives
from django.template.loader import render_to_string


@shared_task(autoretry_for=(OSError,), retry_backoff=True, max_retries=5, ignore_result=True)
def send_templated_email(to: list[str], template: str, context: dict[str, Any]) -> None:
    """Render `<template>_subject.txt`, `.txt` and `.html` and send one message."""
    ctx = {"site_url": settings.SITE_URL, "product_name": "Latchkey", **context}
    subject = " ".join(render_to_string(f"{template}_subject.txt", ctx).split())
    text = render_to_string(f"{template}.txt", ctx)
    html = render_to_string(f"{template}.html", ctx)
    message = EmailMultiAlternatives(subject=subject, body=text, to=to)
    message.attach_alternative(html, "text/html")
    message.send()
