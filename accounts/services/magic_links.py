"""Magic-link sign-in: issue a link by email, consume it once."""

from __future__ import annotations

import hashlib
import re
import secrets
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from django.conf import settings
from django.db import transaction
from django.http import HttpRequest
from django.utils import timezone

from accounts.emails import queue_email
from accounts.models import MagicLinkToken, User, normalize_email
from accounts.navigation import safe_next_url
from accounts.services._common import AccountError
from orgs.actors import Actor
from orgs.services import audit_record

# secrets.token_urlsafe(32) gives 43 characters; anything else cannot be one of ours.
_TOKEN_SHAPE = re.compile(r"^[A-Za-z0-9_-]{43,128}$")


def magic_link_lifetime() -> timedelta:
    return timedelta(seconds=int(getattr(settings, "MAGIC_LINK_MAX_AGE", 15 * 60)))


def magic_link_digest(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def magic_link_token_is_well_formed(token: str) -> bool:
    return bool(_TOKEN_SHAPE.match(token))


@dataclass(frozen=True)
class MagicLinkSignIn:
    user: User
    next_url: str
    created: bool


@transaction.atomic
def magic_link_request(
    *, email: str, next_url: str = "", request: HttpRequest | None = None
) -> None:
    """Email a sign-in link to `email`, whether or not an account exists.

    Invariants: the token (32 random bytes) leaves only in the email; the database keeps its
    SHA-256 digest. Older unused links of the same address are voided. `next_url` is kept
    only when it is a same-site path.
    """
    email = normalize_email(email)
    now = timezone.now()
    MagicLinkToken.objects.filter(email=email, used_at__isnull=True).delete()
    MagicLinkToken.objects.filter(expires_at__lt=now - timedelta(days=1)).delete()

    token = secrets.token_urlsafe(32)
    MagicLinkToken.objects.create(
        email=email,
        token_hash=magic_link_digest(token),
        next_url=safe_next_url(next_url),
        created_at=now,
        expires_at=now + magic_link_lifetime(),
    )
    user = User.objects.filter(email=email).first()
    audit_record(
        action="user.magic_link_requested",
        request=request,
        # No account yet: the request's signed-in user, else the system (as always).
        actor=Actor.for_user(user) if user is not None else None,
        target=user,
        target_type="user",
        target_label=email,
    )
    queue_email(
        to=[email],
        template="email/accounts_magic_link",
        context={
            "link": f"{settings.SITE_URL}/login/magic/{token}/",
            "new_account": user is None,
            "minutes": int(magic_link_lifetime().total_seconds() // 60),
        },
    )


@transaction.atomic
def magic_link_consume(*, token: str, request: HttpRequest | None = None) -> MagicLinkSignIn | None:
    """Use a sign-in link once. Returns the user (created for an unknown email) or None.

    None covers every refusal alike: unknown, already used, expired or voided token, and
    a deactivated account.
    """
    if not magic_link_token_is_well_formed(token):
        return None
    now = timezone.now()
    row = (
        MagicLinkToken.objects.select_for_update()
        .filter(token_hash=magic_link_digest(token))
        .first()
    )
    if row is None or row.used_at is not None or row.expires_at <= now:
        return None
    row.used_at = now
    row.save(update_fields=["used_at"])

    user = User.objects.filter(email=row.email).first()
    created = False
    if user is None:
        user = User.objects.create_user(row.email)
        created = True
        audit_record(
            action="user.signed_up", request=request, actor=Actor.for_user(user), target=user
        )
    if not user.is_active:
        return None
    return MagicLinkSignIn(user=user, next_url=safe_next_url(row.next_url), created=created)


@dataclass(frozen=True)
class SignInLink:
    url: str  # the secret: returned once, to the caller that asked
    expires_at: datetime


@transaction.atomic
def sign_in_link_create(
    *,
    org: Any,
    email: str,
    ttl_minutes: int | None = None,
    next_url: str = "",
    actor: Actor,
    request: HttpRequest | None = None,
) -> SignInLink:
    """A single-use sign-in link for a member of `org`, made for the operator's own pages
    (docs/api.md, `POST sign-in-links`), returned instead of emailed.

    Invariants: only for an existing, active member of `org`, never for platform staff;
    the lifetime is `ttl_minutes` capped at `MAGIC_LINK_MAX_AGE`; the link goes through the
    usual confirmation page and the second factor still applies; the database keeps only
    the token's digest; the audit event never carries the link.
    """
    from orgs.models import Membership

    email = normalize_email(email)
    user = User.objects.filter(email=email, is_active=True).first()
    if user is None or not Membership.objects.filter(org=org, user=user).exists():
        raise AccountError(
            "not_a_member", "No member of this organisation has that email.", param="email"
        )
    if user.is_platform_staff:
        raise AccountError(
            "staff", "Sign-in links are never made for platform staff.", param="email"
        )
    now = timezone.now()
    lifetime = magic_link_lifetime()
    if ttl_minutes is not None:
        lifetime = min(lifetime, timedelta(minutes=max(1, int(ttl_minutes))))
    token = secrets.token_urlsafe(32)
    MagicLinkToken.objects.create(
        email=email,
        token_hash=magic_link_digest(token),
        next_url=safe_next_url(next_url),
        created_at=now,
        expires_at=now + lifetime,
    )
    audit_record(
        action="sign_in_link.created",
        org=org,
        request=request,
        actor=actor,
        target=user,
        target_type="user",
        target_label=email,
        details={"expires_at": (now + lifetime).isoformat(), "next": safe_next_url(next_url)},
    )
    return SignInLink(url=f"{settings.SITE_URL}/login/magic/{token}/", expires_at=now + lifetime)
