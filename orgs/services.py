"""Writes for organisations, memberships and the audit log."""

from __future__ import annotations

from typing import Any

from django.db import models
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import User
from config.net import client_ip, user_agent
from orgs.models import ActorType, AuditEvent, Organization

# Keys that would carry a secret; an event with one of them in `details` is refused.
FORBIDDEN_DETAIL_KEYS = frozenset(
    {"secret", "token", "password", "otp", "otp_token", "code", "recovery_code", "api_key", "key"}
)


def _check_details(details: dict[str, Any]) -> None:
    for name, value in details.items():
        if name.lower() in FORBIDDEN_DETAIL_KEYS:
            raise ValueError(f"Audit details must not carry secrets ({name!r}).")
        if isinstance(value, dict):
            _check_details(value)


def audit_record(
    *,
    action: str,
    org: Organization | None = None,
    request: HttpRequest | None = None,
    actor_user: User | None = None,
    actor_api_key: Any | None = None,
    external_actor_id: str = "",
    target: models.Model | None = None,
    target_type: str = "",
    target_id: str = "",
    target_label: str = "",
    details: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event.

    Invariants: events are never updated or deleted; `details` never holds a secret (keys
    such as `secret`, `token`, `code` are refused). The actor is, in order: the API key
    given, the user given, the request's signed-in user, else the system. IP, user agent
    and request id come from `request` when one is given.
    """
    details = dict(details or {})
    _check_details(details)

    if actor_user is None and actor_api_key is None and request is not None:
        request_user = getattr(request, "user", None)
        if isinstance(request_user, User) and request_user.is_authenticated:
            actor_user = request_user

    if actor_api_key is not None:
        actor_type = ActorType.API_KEY
        actor_id = str(getattr(actor_api_key, "public_id", ""))
        actor_label = str(getattr(actor_api_key, "display", "") or actor_id)
    elif actor_user is not None:
        actor_type = ActorType.USER
        actor_id = ""
        actor_label = actor_user.email
    else:
        actor_type = ActorType.SYSTEM
        actor_id = ""
        actor_label = "system"

    if target is not None:
        target_type = target_type or target._meta.model_name or ""
        target_id = target_id or str(getattr(target, "public_id", "") or target.pk)
        target_label = target_label or str(target)[:254]

    return AuditEvent.objects.create(
        org=org,
        action=action,
        actor_type=actor_type,
        actor_user=actor_user,
        actor_id=actor_id,
        actor_label=actor_label[:254],
        external_actor_id=external_actor_id[:255],
        target_type=target_type[:40],
        target_id=target_id[:64],
        target_label=target_label[:254],
        ip=client_ip(request) if request is not None else None,
        user_agent=user_agent(request) if request is not None else "",
        request_id=getattr(request, "request_id", "") if request is not None else "",
        details=details,
        created_at=timezone.now(),
    )
