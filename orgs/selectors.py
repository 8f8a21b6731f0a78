"""Reads of organisations and memberships. Org-owned reads take `org=`."""

from __future__ import annotations

from django.db.models import QuerySet
from django.http import Http404

from accounts.models import User
from orgs.models import Membership, Organization


def membership_get_for_slug(*, user: User, org_slug: str) -> Membership:
    """The user's membership in the org named by `org_slug`, with the org, in one query.

    An org that does not exist and one the user is not a member of raise the same 404.
    """
    try:
        return Membership.objects.select_related("org").get(user=user, org__slug=org_slug)
    except Membership.DoesNotExist:
        raise Http404("No such organisation.") from None


def membership_list_for_user(*, user: User) -> QuerySet[Membership]:
    return Membership.objects.filter(user=user).select_related("org").order_by("org__name")


def organization_list_for_user(*, user: User) -> QuerySet[Organization]:
    return Organization.objects.filter(memberships__user=user).order_by("name")
