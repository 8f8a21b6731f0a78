"""Writes for API keys: create, edit (scopes, IP allowlist), rotate, revoke, delete, and
leak reports.

Every function is keyword-only and atomic, records one audit event and returns the secret
(where one is issued) to its caller only: the secret is never stored, logged, cached or
put in an audit event. Errors are `ApiKeyError` subclasses carrying a stable `code` (the
API's error code) and, where it helps, the `param` at fault.
"""

from __future__ import annotations

import json
import re
from datetime import datetime, timedelta
from ipaddress import ip_network
from typing import Any
from urllib.parse import quote, unquote, urlsplit, urlunsplit

from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.models import PlatformRole
from apikeys.cache import invalidate_key
from apikeys.keys import display_form, generate_secret, key_digest
from apikeys.models import ApiKey, Environment, IpMode, KeyStatus
from apikeys.networks import NetworkError, clean_allowed_ips, networks_of, within
from apikeys.scopes import ScopeError, missing_scopes, normalize_scopes
from config.errors import ServiceError
from orgs.actors import Actor
from orgs.models import KycStatus, LeakResponse, Organization, OrgStatus
from orgs.services import audit_record
from webhooks.events import emit

DEFAULT_GRACE = timedelta(hours=24)
# A key's `meta`: a JSON object whose compact UTF-8 form is at most this long.
META_MAX_BYTES = 2048
MAX_GRACE = timedelta(days=7)
NAME_MAX_LENGTH = 100


class ApiKeyError(ServiceError):
    """A refused key operation. `code` is the API error code itself; `param` the field at
    fault."""

    code = "validation_error"
    code_is_reason = False


class InvalidKeyInput(ApiKeyError):
    """Bad name, scopes, expiry or grace period."""

    code = "validation_error"


class EnvironmentNotAllowed(ApiKeyError):
    """Live keys before KYC approval, a test key creating a live key, `sys` on an org."""

    code = "environment_not_allowed"


class ScopeNotAllowed(ApiKeyError):
    """A key created through the API asked for a scope its creating key lacks."""

    code = "insufficient_scope"

    def __init__(self, message: str, *, required_scope: str) -> None:
        super().__init__(message, param="scopes")
        self.required_scope = required_scope


class OrgSuspended(ApiKeyError):
    code = "org_suspended"


class KeyNotActive(ApiKeyError):
    """Rotating a revoked, expired, deleted or already rotated key."""

    code = "validation_error"


class KeyAlreadyRotated(KeyNotActive):
    """Rotating a key that was rotated before: its successor is the one to rotate."""

    code = "already_rotated"


class ActorNotAllowed(ApiKeyError):
    """The acting user may not do this (system keys need a platform owner)."""

    code = "permission_denied"


def _clean_name(name: str) -> str:
    name = (name or "").strip()
    if not name:
        raise InvalidKeyInput("Give the key a name.", param="name")
    if len(name) > NAME_MAX_LENGTH:
        raise InvalidKeyInput(
            f"The name is too long (at most {NAME_MAX_LENGTH} characters).", param="name"
        )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in name):
        raise InvalidKeyInput("The name contains control characters.", param="name")
    return name


def _clean_scopes(scopes: Any, *, system: bool) -> list[str]:
    try:
        return normalize_scopes(scopes, system=system)
    except ScopeError as exc:
        raise InvalidKeyInput(exc.message, param="scopes") from None


def _clean_networks(allowed_ips: Any, mode: Any) -> tuple[list[str], str]:
    try:
        ranges = clean_allowed_ips(allowed_ips)
    except NetworkError as exc:
        raise InvalidKeyInput(exc.message, param="allowed_ips") from None
    if mode not in IpMode.values:
        raise InvalidKeyInput(
            "The allowlist mode is 'enforce' or 'report'.", param="allowed_ips_mode"
        )
    return ranges, str(mode)


def _check_may_grant(acting_key: ApiKey, scopes: list[str]) -> None:
    """A key gives no other key a scope it lacks itself."""
    missing = missing_scopes(acting_key.scopes, scopes)
    if missing:
        raise ScopeNotAllowed(
            f"The key making this request lacks the scope {missing[0]!r}, so it cannot grant it.",
            required_scope=missing[0],
        )


def _check_networks_within(acting_key: ApiKey | None, ranges: list[str], mode: str) -> None:
    """A key that may only be used from some networks gives no key a wider reach: what it
    creates or edits carries an enforced list inside its own (otherwise one request from
    an allowed network would mint a key usable from anywhere)."""
    if (
        acting_key is None
        or not acting_key.allowed_ips
        or acting_key.allowed_ips_mode != IpMode.ENFORCE
    ):
        return
    own = networks_of(tuple(acting_key.allowed_ips))
    outside = [r for r in ranges if not within(ip_network(r), own)]
    if not ranges or mode != IpMode.ENFORCE or outside:
        raise InvalidKeyInput(
            "The key making this request may only be used from "
            f"{', '.join(acting_key.allowed_ips)}; a key it creates or edits must carry an "
            "enforced IP allowlist inside those ranges"
            + (f" ({outside[0]} is not)." if outside else "."),
            param="allowed_ips",
        )


def _unstorable_text(value: Any) -> bool:
    """A NUL or an unpaired surrogate in any string of `value` (PostgreSQL's jsonb refuses
    both)."""
    if isinstance(value, str):
        return "\x00" in value or any("\ud800" <= ch <= "\udfff" for ch in value)
    if isinstance(value, dict):
        return any(_unstorable_text(k) or _unstorable_text(v) for k, v in value.items())
    if isinstance(value, list):
        return any(_unstorable_text(item) for item in value)
    return False


def clean_meta(meta: Any) -> dict[str, Any]:
    """A key's `meta`: a JSON object of at most META_MAX_BYTES (compact UTF-8 JSON)."""
    if meta is None:
        return {}
    if not isinstance(meta, dict):
        raise InvalidKeyInput('meta must be a JSON object, e.g. {"tenant": "t_42"}.', param="meta")
    try:
        encoded = json.dumps(meta, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError):
        raise InvalidKeyInput("meta must hold JSON values only.", param="meta") from None
    if _unstorable_text(meta):
        raise InvalidKeyInput(
            "meta must not hold NUL characters or unpaired surrogates.", param="meta"
        )
    size = len(encoded.encode("utf-8"))
    if size > META_MAX_BYTES:
        raise InvalidKeyInput(
            f"meta is {size} bytes as compact JSON; at most {META_MAX_BYTES} are allowed.",
            param="meta",
        )
    return meta


def _clean_expiry(expires_at: datetime | None, now: datetime) -> datetime | None:
    if expires_at is None:
        return None
    if timezone.is_naive(expires_at):
        raise InvalidKeyInput("The expiry needs a time zone.", param="expires_at")
    if expires_at <= now:
        raise InvalidKeyInput("The expiry must be in the future.", param="expires_at")
    return expires_at


def _check_org_may_hold(org: Organization, environment: str) -> None:
    if org.status == OrgStatus.SUSPENDED:
        raise OrgSuspended("This organisation is suspended; its keys cannot be changed.")
    if environment == Environment.LIVE and org.kyc_status != KycStatus.APPROVED:
        raise EnvironmentNotAllowed(
            "Live keys are available once the organisation's KYC application is approved.",
            param="environment",
        )


def _issue(
    *,
    org: Organization | None,
    name: str,
    environment: str,
    scopes: list[str],
    now: datetime,
    expires_at: datetime | None,
    actor: Actor,
    predecessor: ApiKey | None = None,
    meta: dict[str, Any] | None = None,
    allowed_ips: list[str] | None = None,
    allowed_ips_mode: str = IpMode.ENFORCE,
) -> tuple[ApiKey, str]:
    secret = generate_secret(environment)
    key = ApiKey.objects.create(
        org=org,
        name=name,
        environment=environment,
        scopes=scopes,
        meta=meta or {},
        digest=key_digest(secret),
        display=display_form(secret),
        created_by=actor.user,
        created_by_key=actor.api_key,
        predecessor=predecessor,
        created_at=now,
        expires_at=expires_at,
        allowed_ips=allowed_ips or [],
        allowed_ips_mode=allowed_ips_mode,
    )
    return key, secret


def _key_data(key: ApiKey) -> dict[str, Any]:
    """What a webhook tells of a key: ids and names, never its secret or digest."""
    return {
        "id": key.public_id,
        "name": key.name,
        "environment": key.environment,
        "expires_at": key.expires_at.isoformat() if key.expires_at else None,
    }


def _locked(key: ApiKey) -> ApiKey:
    """The key's row, re-read under a row lock so concurrent writes serialise."""
    return ApiKey.objects.select_for_update(of=("self",)).select_related("org").get(pk=key.pk)


@transaction.atomic
def apikey_create(
    *,
    org: Organization,
    name: str,
    environment: str,
    scopes: Any,
    expires_at: datetime | None = None,
    meta: Any = None,
    allowed_ips: Any = (),
    allowed_ips_mode: Any = IpMode.ENFORCE,
    actor: Actor,
    request: HttpRequest | None = None,
) -> tuple[ApiKey, str]:
    """Issue an org key and return it with its secret (the only time the secret exists).

    Invariants: scopes are registry scopes with their implied scopes added; `meta` is a
    JSON object of at most META_MAX_BYTES; `live` only while the
    org's KYC is approved; never for a suspended org; a key created by another key holds
    no scope and no environment that key lacks (a test key cannot create a live key) and
    expires no later than that key. `actor` is the creator (a person, a key, or the
    system for the operator's tools).
    """
    creator_key = actor.api_key
    now = timezone.now()
    name = _clean_name(name)
    if environment not in (Environment.LIVE, Environment.TEST):
        raise EnvironmentNotAllowed(
            "Choose the live or test environment.", code="validation_error", param="environment"
        )
    clean_scopes = _clean_scopes(scopes, system=False)
    clean = clean_meta(meta)
    ranges, mode = _clean_networks(list(allowed_ips), allowed_ips_mode)
    if (
        creator_key is not None
        and not ranges
        and creator_key.allowed_ips
        and creator_key.allowed_ips_mode == IpMode.ENFORCE
    ):
        # A key bound to some networks creates keys bound to the same ones by default.
        ranges, mode = list(creator_key.allowed_ips), IpMode.ENFORCE
    _check_networks_within(creator_key, ranges, mode)
    expires_at = _clean_expiry(expires_at, now)
    _check_org_may_hold(org, environment)
    if creator_key is not None:
        if creator_key.org_id != org.pk:
            raise ValueError("A key can only create keys for its own organisation.")
        if creator_key.environment == Environment.TEST and environment == Environment.LIVE:
            raise EnvironmentNotAllowed("A test key cannot create a live key.", param="environment")
        _check_may_grant(creator_key, clean_scopes)
        # A key cannot outlive the key that made it: otherwise a key about to expire (or
        # in its rotation grace) could mint a permanent copy of itself.
        if creator_key.expires_at is not None and (
            expires_at is None or expires_at > creator_key.expires_at
        ):
            raise InvalidKeyInput(
                "The key making this request expires at "
                f"{creator_key.expires_at.isoformat()}; a key it creates must expire "
                "no later than that.",
                param="expires_at",
            )

    key, secret = _issue(
        org=org,
        name=name,
        environment=environment,
        scopes=clean_scopes,
        now=now,
        expires_at=expires_at,
        actor=actor,
        meta=clean,
        allowed_ips=ranges,
        allowed_ips_mode=mode,
    )
    audit_record(
        action="api_key.created",
        org=org,
        request=request,
        actor=actor,
        target=key,
        details={
            "name": key.name,
            "environment": key.environment,
            "scopes": key.scopes,
            "expires_at": expires_at.isoformat() if expires_at else None,
            **({"allowed_ips": ranges, "allowed_ips_mode": mode} if ranges else {}),
        },
    )
    emit(org, "api_key.created", {"api_key": _key_data(key)})
    return key, secret


@transaction.atomic
def system_apikey_create(
    *,
    name: str,
    scopes: Any,
    actor: Actor,
    expires_at: datetime | None = None,
    request: HttpRequest | None = None,
) -> tuple[ApiKey, str]:
    """Issue a system key (environment `sys`, no org, system scopes only).

    Only a platform owner may create one, or the operator's shell (`Actor.system()`:
    `manage.py create_api_key --system`).
    """
    if not actor.is_system and (
        actor.user is None or actor.user.platform_role != PlatformRole.PLATFORM_OWNER
    ):
        raise ActorNotAllowed("Only platform owners manage system keys.")
    now = timezone.now()
    name = _clean_name(name)
    clean_scopes = _clean_scopes(scopes, system=True)
    expires_at = _clean_expiry(expires_at, now)
    key, secret = _issue(
        org=None,
        name=name,
        environment=Environment.SYS,
        scopes=clean_scopes,
        now=now,
        expires_at=expires_at,
        actor=actor,
    )
    audit_record(
        action="api_key.created",
        org=None,
        request=request,
        actor=actor,
        target=key,
        details={
            "name": key.name,
            "environment": key.environment,
            "scopes": key.scopes,
            "expires_at": expires_at.isoformat() if expires_at else None,
        },
    )
    return key, secret


@transaction.atomic
def apikey_rotate(
    *,
    key: ApiKey,
    grace: timedelta = DEFAULT_GRACE,
    actor: Actor,
    request: HttpRequest | None = None,
) -> tuple[ApiKey, str]:
    """Issue a successor (same org, name, environment, scopes) and retire `key` after `grace`.

    Invariants: grace is between 0 and 7 days; the old key then expires at
    `min(now + grace, its own expiry)` and the successor inherits the old key's expiry;
    revoked, expired, deleted and already rotated keys are refused; the environment rule of
    creation applies (a live successor needs approved KYC); a key rotating a key
    (`actor.api_key`) never makes a successor that outlives itself.
    """
    if not timedelta(0) <= grace <= MAX_GRACE:
        raise InvalidKeyInput("The grace period must be between 0 and 7 days.", param="grace")
    now = timezone.now()
    old = _locked(key)
    if old.deleted_at is not None:
        raise KeyNotActive("This key was deleted.")
    status = old.status_at(now)
    if status == KeyStatus.REVOKED:
        raise KeyNotActive("A revoked key cannot be rotated.")
    if old.rotated_at is not None:
        successor = old.successors.order_by("created_at", "id").first()
        successor_id = successor.public_id if successor is not None else None
        raise KeyAlreadyRotated(
            "This key was already rotated"
            + (f" into {successor_id}" if successor_id else "")
            + "; rotate its successor instead.",
            extra={"successor_id": successor_id},
        )
    if status == KeyStatus.EXPIRED:
        raise KeyNotActive("An expired key cannot be rotated.")
    if old.org is not None:
        _check_org_may_hold(old.org, old.environment)
    # As at creation: a key about to expire (or in its own rotation grace) could otherwise
    # turn a key without expiry into a fresh secret that outlives it.
    acting_key = actor.api_key
    if (
        acting_key is not None
        and acting_key.expires_at is not None
        and (old.expires_at is None or old.expires_at > acting_key.expires_at)
    ):
        raise InvalidKeyInput(
            "The key making this request expires at "
            f"{acting_key.expires_at.isoformat()}; it cannot rotate a key into a successor "
            "that outlives it. Rotate this key from the dashboard or with a longer-lived key."
        )

    original_expiry = old.expires_at
    successor, secret = _issue(
        org=old.org,
        name=old.name,
        environment=old.environment,
        scopes=list(old.scopes),
        now=now,
        expires_at=original_expiry,
        actor=actor,
        predecessor=old,
        meta=dict(old.meta or {}),
        allowed_ips=list(old.allowed_ips or []),
        allowed_ips_mode=old.allowed_ips_mode,
    )
    grace_end = now + grace
    if original_expiry is not None:
        grace_end = min(grace_end, original_expiry)
    old.rotated_at = now
    old.expires_at = grace_end
    old.save(update_fields=["rotated_at", "expires_at"])
    audit_record(
        action="api_key.rotated",
        org=old.org,
        request=request,
        actor=actor,
        target=old,
        details={
            "successor_id": successor.public_id,
            "grace_seconds": int(grace.total_seconds()),
            "grace_ends_at": grace_end.isoformat(),
        },
    )
    emit(
        old.org,
        "api_key.rotated",
        {
            "api_key": _key_data(old),
            "successor": _key_data(successor),
            "grace_ends_at": grace_end.isoformat(),
        },
    )
    digest = old.digest
    invalidate_key(digest)  # now, and again when the transaction commits
    key.rotated_at, key.expires_at = old.rotated_at, old.expires_at
    return successor, secret


@transaction.atomic
def apikey_revoke(
    *,
    key: ApiKey,
    actor: Actor,
    request: HttpRequest | None = None,
) -> ApiKey:
    """Revoke `key` at once and for good. Revoking a revoked key changes nothing."""
    locked = _locked(key)
    if locked.revoked_at is None:
        locked.revoked_at = timezone.now()
        locked.save(update_fields=["revoked_at"])
        audit_record(
            action="api_key.revoked",
            org=locked.org,
            request=request,
            actor=actor,
            target=locked,
            details={"name": locked.name},
        )
        emit(locked.org, "api_key.revoked", {"api_key": _key_data(locked)})
        digest = locked.digest
        invalidate_key(digest)  # now, and again when the transaction commits
    key.revoked_at = locked.revoked_at
    return locked


LEAKED_EMAIL = "webhooks/email/api_key_leaked"
REPORT_URL_MAX = 500
_KEY_SHAPE = re.compile(r"[A-Za-z][A-Za-z0-9_]{0,40}_[0-9A-Za-z]{38}")


def clean_report_url(url: Any) -> str:
    """Where a leak was found, as far as it is safe to keep in the audit log and a webhook:
    an http(s) URL's scheme, host and path, without credentials, query or fragment, and
    with every key-shaped string in it replaced by `[redacted]`; "" for anything else.

    A report comes from anyone: its URL may carry the leaked key itself (`?k=lk_live_…`),
    which must not end up stored in clear where a narrow reader could see it."""
    if not isinstance(url, str) or _unstorable_text(url) or len(url) > 2048:
        return ""
    try:
        parts = urlsplit(url.strip())
        host = parts.hostname
        port = parts.port
    except ValueError:
        return ""
    if parts.scheme.lower() not in ("http", "https") or not host:
        return ""
    host = _KEY_SHAPE.sub("[redacted]", host)
    netloc = f"[{host}]" if ":" in host else host
    if port is not None:
        netloc += f":{port}"
    path = unquote(parts.path)
    if _KEY_SHAPE.search(path):
        path = _KEY_SHAPE.sub("[redacted]", path)
    cleaned = urlunsplit(
        (parts.scheme.lower(), netloc, quote(path, safe="/[]@:+,;=!$&'()*~-._"), "", "")
    )
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in cleaned):
        return ""
    return cleaned[:REPORT_URL_MAX]


@transaction.atomic
def apikey_report_leaked(
    *, key: ApiKey, source: str, url: str = "", request: HttpRequest | None = None
) -> bool:
    """A key was found where it must not be (`source`: who found it, `url`: where).

    Revoke it now, or, when the org's `leak_response` is "flag", mark it leaked and leave
    it working (status `leaked`, a badge on its page). Either way record `api_key.leaked`,
    tell the org's endpoints (webhook `api_key.leaked`) and its owners and admins (email).
    Once per key, and only for a key that still works (a revoked, expired or deleted key
    leaks nothing); returns whether this report did anything. The email names the key and
    links to its page, not to `url`: a report can come from anyone, and a link from a
    stranger has no place in a message from Latchkey."""
    from accounts.emails import queue_email
    from orgs.selectors import admin_emails

    locked = _locked(key)
    org = locked.org
    if org is None or locked.leaked_at is not None or not locked.is_usable():
        return False
    url = clean_report_url(url)
    revoke = org.leak_response != LeakResponse.FLAG
    locked.leaked_at = timezone.now()
    locked.save(update_fields=["leaked_at"])
    if revoke:
        apikey_revoke(key=locked, actor=Actor.for_request(request), request=request)
    else:
        invalidate_key(locked.digest)  # the flag shows in `me` and the verify answer
    details = {
        "name": locked.name,
        "source": source[:100],
        "url": url,
        "response": "revoked" if revoke else "flagged",
    }
    audit_record(action="api_key.leaked", org=org, request=request, target=locked, details=details)
    emit(
        org,
        "api_key.leaked",
        {
            "api_key": _key_data(locked),
            "source": details["source"],
            "url": details["url"],
            "revoked": revoke,
        },
    )
    context = {
        "org_name": org.name,
        "key_name": locked.name,
        "key_id": locked.public_id,
        "source": details["source"],
        "revoked": revoke,
        "key_path": f"/o/{org.slug}/api-keys/{locked.public_id}/",
    }
    for email in admin_emails(org=org):
        queue_email(to=[email], template=LEAKED_EMAIL, context=context)
    key.leaked_at, key.revoked_at = locked.leaked_at, locked.revoked_at
    return True


_UNSET: Any = object()


@transaction.atomic
def apikey_update(
    *,
    key: ApiKey,
    scopes: Any = _UNSET,
    allowed_ips: Any = _UNSET,
    allowed_ips_mode: Any = _UNSET,
    actor: Actor,
    request: HttpRequest | None = None,
) -> ApiKey:
    """Change what a key may do (`scopes`) and where from (`allowed_ips`, `allowed_ips_mode`);
    arguments left out stay as they are.

    Invariants: a revoked, expired or deleted key cannot be edited; scopes are registry
    scopes with their implied scopes added; a key editing another key (`actor.api_key`,
    the API) gives only scopes it holds itself (the caller checks it holds the edited key's
    scopes, as for rotation). The change is audited (`api_key.updated`, from and to) and in
    force on the next request in every worker: the key is invalidated in the verification
    cache and the call returns once no admission lease granted before it is still held.
    """
    locked = _locked(key)
    if not locked.is_usable():
        raise KeyNotActive("A revoked, expired or deleted key cannot be edited.")
    acting_key = actor.api_key
    if acting_key is not None:
        # Checked again under the row lock: the key may have been widened meanwhile.
        held = missing_scopes(acting_key.scopes, locked.scopes)
        if held:
            raise ScopeNotAllowed(
                f"The key making this request lacks the scope {held[0]!r} that the key it "
                "edits holds.",
                required_scope=held[0],
            )
    changes: dict[str, dict[str, Any]] = {}
    if scopes is not _UNSET:
        clean_scopes = _clean_scopes(scopes, system=locked.is_system)
        if acting_key is not None:
            _check_may_grant(acting_key, clean_scopes)
        if sorted(clean_scopes) != sorted(locked.scopes):
            changes["scopes"] = {"from": sorted(locked.scopes), "to": sorted(clean_scopes)}
            locked.scopes = clean_scopes
    if allowed_ips is not _UNSET or allowed_ips_mode is not _UNSET:
        ranges, mode = _clean_networks(
            list(locked.allowed_ips) if allowed_ips is _UNSET else allowed_ips,
            locked.allowed_ips_mode if allowed_ips_mode is _UNSET else allowed_ips_mode,
        )
        _check_networks_within(acting_key, ranges, mode)
        if ranges != list(locked.allowed_ips):
            changes["allowed_ips"] = {"from": list(locked.allowed_ips), "to": ranges}
            locked.allowed_ips = ranges
        if mode != locked.allowed_ips_mode:
            changes["allowed_ips_mode"] = {"from": locked.allowed_ips_mode, "to": mode}
            locked.allowed_ips_mode = mode
    if not changes:
        return locked
    locked.save(update_fields=list(changes))
    audit_record(
        action="api_key.updated",
        org=locked.org,
        request=request,
        actor=actor,
        target=locked,
        details={"name": locked.name, "changes": changes},
    )
    invalidate_key(locked.digest)  # now, and again when the transaction commits
    for field_name in changes:
        setattr(key, field_name, getattr(locked, field_name))
    return locked


@transaction.atomic
def apikey_delete(
    *,
    key: ApiKey,
    actor: Actor,
    request: HttpRequest | None = None,
) -> None:
    """Remove `key` from every list; it stops working at once (it is revoked too).

    The row stays, so the audit events that name it still resolve.
    """
    locked = _locked(key)
    if locked.deleted_at is not None:
        return
    now = timezone.now()
    was_revoked = locked.revoked_at is not None
    locked.deleted_at = now
    locked.revoked_at = locked.revoked_at or now
    locked.save(update_fields=["deleted_at", "revoked_at"])
    audit_record(
        action="api_key.deleted",
        org=locked.org,
        request=request,
        actor=actor,
        target=locked,
        details={"name": locked.name, "was_revoked": was_revoked},
    )
    digest = locked.digest
    invalidate_key(digest)  # now, and again when the transaction commits
    key.deleted_at, key.revoked_at = locked.deleted_at, locked.revoked_at
