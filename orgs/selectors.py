"""Reads of organisations, memberships, invitations and audit events.

Org-owned reads take `org=` as a required keyword; lookups by public id inside an org
raise the same 404 for "absent" and "another org's".
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from django.apps import apps
from django.db.models import (
    BooleanField,
    Count,
    Exists,
    ExpressionWrapper,
    OuterRef,
    Q,
    QuerySet,
)
from django.http import Http404
from django.utils import timezone
from django.utils.text import slugify

from accounts.models import User
from config.pager import Page, keyset_page
from orgs.models import AuditEvent, Invitation, Membership, Organization, Role
from orgs.tokens import invitation_token_hash


def organization_by_pk(*, pk: int) -> Organization:
    """The org with database id `pk` (an authenticated key's own org)."""
    return Organization.objects.get(pk=pk)


def user_in_org_requiring_two_factor(*, user: User) -> bool:
    """Whether any org `user` belongs to requires two-factor of its members."""
    return Membership.objects.filter(user=user, org__require_two_factor=True).exists()


def admin_emails(*, org: Organization) -> list[str]:
    """The addresses of the org's active owners and admins (who are told of problems)."""
    return sorted(
        Membership.objects.filter(org=org, role__in=[Role.OWNER, Role.ADMIN], user__is_active=True)
        .values_list("user__email", flat=True)
        .distinct()
    )


def membership_get_for_slug(*, user: User, org_slug: str) -> Membership:
    """The user's membership in the org named by `org_slug`, with the org, in one query.

    An org that does not exist and one the user is not a member of raise the same 404.
    """
    try:
        return Membership.objects.select_related("org").get(user=user, org__slug=org_slug)
    except Membership.DoesNotExist:
        raise Http404("No such organisation.") from None


def membership_find_for_slug(*, user: User, org_slug: str) -> Membership | None:
    """Like `membership_get_for_slug`, but None instead of a 404 (one query)."""
    return Membership.objects.select_related("org").filter(user=user, org__slug=org_slug).first()


def membership_first_for_user(*, user: User) -> Membership | None:
    return membership_list_for_user(user=user).first()


def membership_list_for_user(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("org").order_by("org__name")


def organization_list_for_user(*, user: User) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")


def org_switcher_list(*, user: User) -> list[dict[str, str]]:
    """Name, slug and the user's role of each org of the user, for the shell's switcher
    and its navigation on pages outside an org: one query."""
    rows = (
        Membership.objects.filter(user=user)
        .order_by("org__name", "org__slug")
        .values_list("org__name", "org__slug", "role")
    )
    return [{"name": name, "slug": slug, "role": role} for name, slug, role in rows]


def org_slug_suggest(*, name: str) -> str:
    """A free slug derived from `name` (`acme`, else `acme-2`, `acme-3`...): one query."""
    base = slugify(name)[:40].strip("-") or "org"
    if len(base) < 2:
        base = f"{base}-org"
    taken = set(Organization.objects.filter(slug__startswith=base).values_list("slug", flat=True))
    if base not in taken:
        return base
    n = 2
    while f"{base}-{n}" in taken:
        n += 1
    return f"{base}-{n}"


# Confirmed django-otp devices that count as a second factor, as accounts defines it
# (accounts.selectors.user_has_second_factor). Models not installed are skipped.
TWO_FACTOR_DEVICE_MODELS = (
    "otp_totp.TOTPDevice",
    "accounts.PasskeyDevice",
    "accounts.RecoveryCodeDevice",
)


def _has_two_factor(user_ref: str = "user") -> ExpressionWrapper:
    """One EXISTS term per device model, OR-ed: the members page keeps a constant number
    of queries however many members it lists (django-otp's `devices_for_user` would cost
    a query per member and device type). `user_ref` names the user in the outer query."""
    expression: Any = None
    for label in TWO_FACTOR_DEVICE_MODELS:
        try:
            model = apps.get_model(label)
        except LookupError:
            continue
        term = Exists(model.objects.filter(user=OuterRef(user_ref), confirmed=True))
        expression = term if expression is None else expression | term
    if expression is None:
        expression = Q(pk__in=[])
    return ExpressionWrapper(expression, output_field=BooleanField())


def user_has_two_factor(*, user: User) -> bool:
    """Whether the user has a confirmed second factor (one query)."""
    return bool(
        User.objects.filter(pk=user.pk)
        .annotate(has_two_factor=_has_two_factor("pk"))
        .values_list("has_two_factor", flat=True)
        .first()
    )


def membership_find(*, org: Organization, public_id: str) -> Membership | None:
    """One member of the org by public id, carrying `has_two_factor` as list rows do; None
    when there is no such member in this org."""
    return membership_list(org=org).filter(public_id=public_id).first()


def membership_list(*, org: Organization) -> QuerySet[Membership]:
    """Members of the org with their user and `has_two_factor`, in joining order: one query."""
    return (
        Membership.objects.filter(org=org)
        .select_related("user")
        .annotate(has_two_factor=_has_two_factor())
        .order_by("created_at", "id")
    )


def membership_get(*, org: Organization, public_id: str) -> Membership:
    try:
        return Membership.objects.select_related("user", "org").get(org=org, public_id=public_id)
    except Membership.DoesNotExist:
        raise Http404("No such member.") from None


def membership_counts(*, org: Organization) -> dict[str, int]:
    """Members by role and in total, in one query."""
    counts = Membership.objects.filter(org=org).aggregate(
        total=Count("id"),
        owners=Count("id", filter=Q(role=Role.OWNER)),
        admins=Count("id", filter=Q(role=Role.ADMIN)),
        members=Count("id", filter=Q(role=Role.MEMBER)),
    )
    return {key: int(value or 0) for key, value in counts.items()}


def invitation_list_pending(*, org: Organization) -> QuerySet[Invitation]:
    """Open invitations (not accepted, not cancelled), expired ones included so they can
    be resent, newest first: one query."""
    return (
        Invitation.objects.filter(org=org, accepted_at__isnull=True, cancelled_at__isnull=True)
        .select_related("invited_by")
        .order_by("-sent_at", "-id")
    )


def invitation_list(*, org: Organization) -> QuerySet[Invitation]:
    """Every invitation of the org (open, accepted, cancelled, expired), newest first."""
    return Invitation.objects.filter(org=org).order_by("-sent_at", "-id")


def invitation_count_pending(*, org: Organization) -> int:
    return Invitation.objects.filter(
        org=org,
        accepted_at__isnull=True,
        cancelled_at__isnull=True,
        expires_at__gt=timezone.now(),
    ).count()


def invitation_get(*, org: Organization, public_id: str) -> Invitation:
    try:
        return Invitation.objects.select_related("org").get(org=org, public_id=public_id)
    except Invitation.DoesNotExist:
        raise Http404("No such invitation.") from None


def invitation_get_by_token(*, token: str) -> Invitation | None:
    """The invitation a link's token names, usable or not, with its org and inviter."""
    if not token or len(token) > 128:
        return None
    return (
        Invitation.objects.select_related("org", "invited_by")
        .filter(token_hash=invitation_token_hash(token))
        .first()
    )


def invitation_get_for_invitee(*, public_id: str, user: User) -> Invitation | None:
    """The invitation `public_id` if it was sent to `user`'s email, else None: someone
    else's invitation is indistinguishable from one that does not exist."""
    return (
        Invitation.objects.select_related("org", "invited_by")
        .filter(public_id=public_id, email=user.email)
        .first()
    )


# ---------------------------------------------------------------------------------------
# Audit events
# ---------------------------------------------------------------------------------------

AUDIT_PAGE_SIZE = 50


def audit_event_list(
    *,
    org: Organization,
    action: str | None = None,
    actor: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    target_id: str | None = None,
) -> QuerySet[AuditEvent]:
    """The org's audit events, newest first (`created_at`, then row id), filtered.

    The one reader of an org's audit log: the dashboard page, its CSV export and the API
    all go through it. `action` is exact; `actor` matches a key id (`key_…`), a user's
    email (case-insensitive) or an integrator's X-Actor-Id; `since` is inclusive and
    `until` exclusive; `target_id` is a target's public id (`key_…`, `mem_…`, ...).
    """
    events = AuditEvent.objects.filter(org=org)
    if action:
        events = events.filter(action=action)
    if actor:
        events = events.filter(
            Q(actor_id=actor) | Q(actor_label__iexact=actor) | Q(external_actor_id=actor)
        )
    if since is not None:
        events = events.filter(created_at__gte=since)
    if until is not None:
        events = events.filter(created_at__lt=until)
    if target_id:
        events = events.filter(target_id=target_id)
    return events.order_by("-created_at", "-id")


def audit_event_list_for_key(
    *, org: Organization, environment: str, **filters: Any
) -> QuerySet[AuditEvent]:
    """The org's audit log as a key of `environment` may read it: a test key knows nothing
    of live keys, neither their events nor their names."""
    events = audit_event_list(org=org, **filters)
    if environment == "test":
        api_key = apps.get_model("apikeys", "ApiKey")
        live = api_key.objects.filter(org=org, environment="live").values_list(
            "public_id", flat=True
        )
        events = events.exclude(target_id__in=live).exclude(actor_id__in=live)
    return events


def audit_event_list_recent(*, org: Organization, limit: int = 10) -> list[AuditEvent]:
    return list(audit_event_list(org=org)[:limit])


def audit_action_list(*, org: Organization) -> list[str]:
    """The distinct actions recorded in the org, sorted: one query on the (org, action)
    index, for the audit page's action filter."""
    return list(
        AuditEvent.objects.filter(org=org)
        .order_by("action")
        .values_list("action", flat=True)
        .distinct()
    )


AuditPage = Page[AuditEvent]


def audit_event_page(
    *,
    org: Organization,
    before: str = "",
    after: str = "",
    limit: int = AUDIT_PAGE_SIZE,
    **filters: Any,
) -> AuditPage:
    """A keyset page (`config.pager`) of `audit_event_list(org=org, **filters)` in one
    query. `before` / `after` name an event (`evt_…`) of this org; an unknown or another
    org's cursor gives an empty page, never another org's position."""
    return keyset_page(
        audit_event_list(org=org, **filters),
        scope=AuditEvent.objects.filter(org=org),
        following=before,
        preceding=after,
        limit=limit,
    )
