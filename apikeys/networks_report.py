"""Requests from outside a key's IP allowlist: what is recorded besides the answer.

- In "report only" mode the request is admitted and counted in the key's usage
  (`KeyUsageHour.ip_reported`, through the same usage hash as its other counters: exactly
  once, folded like them), and its recent-request entry shows its address, which the key
  page marks as outside the list.
- In both modes an audit event `api_key.ip_not_allowed` names the address, the method and
  path, the mode and whether the request was refused: at most one per key, address and
  hour, and at most `AUDIT_PER_KEY_HOUR` per key and hour, so a flood (or a list that
  is wrong for every client) costs a few rows, not one per request. A key used from an
  unexpected address is also how a leak shows, so refusals are audited too.

Neither record may fail the request: an unreachable cache or database only skips the
audit event (logged, rate-limited).
"""

from __future__ import annotations

import time
from typing import TYPE_CHECKING

from django.core.cache import cache
from django.db import DatabaseError, transaction
from django.http import HttpRequest

from apikeys import redisconn, usage
from apikeys.backend import IP_REPORTED

if TYPE_CHECKING:
    from apikeys.authentication import ApiKeyPrincipal

AUDIT_ACTION = "api_key.ip_not_allowed"
AUDIT_PER_KEY_HOUR = 20
_errors = redisconn.ErrorLog(logger_name="apikeys.networks")


def outside(
    principal: ApiKeyPrincipal,
    *,
    ip: str,
    method: str,
    path: str,
    request: HttpRequest | None,
    refused: bool,
) -> None:
    """Record a request of `principal` from `ip`, outside its allowlist."""
    now = time.time()
    hour = usage.hour_start(now)
    if not refused:
        usage.record_status(
            key_pk=principal.key_id,
            org_pk=principal.org_id,
            hour=hour,
            status_class=IP_REPORTED,
        )
    if _audit_due(principal.key_id, ip, hour):
        _audit(principal, ip=ip, method=method, path=path, request=request, refused=refused)


def _audit_due(key_pk: int, ip: str, hour: int) -> bool:
    """True for the first request of this key and address this hour, within the cap."""
    cap = f"ipna:{key_pk}:{hour}"
    try:
        # The cap first: past it, no per-address name is created either.
        if int(cache.get(cap, 0)) >= AUDIT_PER_KEY_HOUR:
            return False
        if not cache.add(f"ipna:{key_pk}:{hour}:{ip}", 1, 3600):
            return False
        cache.add(cap, 0, 3600)
        return int(cache.incr(cap)) <= AUDIT_PER_KEY_HOUR
    except Exception as exc:  # the cache is down: skip the audit event, never the request
        _errors.error("ipna", "Cache unreachable: IP allowlist audit event skipped", exc)
        return False


def _audit(
    principal: ApiKeyPrincipal,
    *,
    ip: str,
    method: str,
    path: str,
    request: HttpRequest | None,
    refused: bool,
) -> None:
    from apikeys.models import ApiKey
    from orgs.actors import Actor
    from orgs.models import Organization
    from orgs.services import audit_record

    if principal.org_id is None:
        return
    # The principal names the key well enough for the audit log: no row is read for it.
    key = ApiKey(
        pk=principal.key_id,
        org_id=principal.org_id,
        public_id=principal.public_id,
        display=principal.display,
    )
    try:
        with transaction.atomic():
            audit_record(
                action=AUDIT_ACTION,
                org=Organization(pk=principal.org_id),
                request=request,
                actor=Actor.for_key(key),
                target_type="apikey",
                target_id=principal.public_id,
                target_label=f"{principal.name} ({principal.display})"[:254],
                details={
                    "ip": ip,
                    "method": method,
                    "path": path[:200],
                    "mode": "report" if principal.ip_report_only else "enforce",
                    "refused": refused,
                },
            )
    except DatabaseError as exc:
        _errors.error("ipna-db", "Database unreachable: IP allowlist audit event skipped", exc)
