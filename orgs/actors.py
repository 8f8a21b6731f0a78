"""Who acts: the one value every service that changes something takes as `actor=`, and
the audit log records (ADR 0088).

Three kinds, those of the audit log (`orgs.models.ActorType`):

- a person (`Actor.for_user`, `Actor.for_member`, or `Actor.signed_in` on a dashboard
  page). Platform staff are people too: what they may do is `user.is_platform_staff`,
  checked by the platform services, and the audit log has always recorded them as users;
- an API key (`Actor.for_key`), with the integrator's own user id (`X-Actor-Id`) when the
  request named one;
- the system (`Actor.system()`): the operator's commands, scheduled work, and requests
  that carry no signed-in person.

In an organisation a key and the system act with an admin's powers (`orgs.roles`, ADR
0020); a person acts with the role of their membership, which the actor carries when the
tenancy machinery already resolved it for the page (`request.membership`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from django.core.exceptions import PermissionDenied
from django.http import HttpRequest

from accounts.models import User
from orgs.models import ActorType, Membership

if TYPE_CHECKING:
    from apikeys.models import ApiKey

SYSTEM_LABEL = "system"


@dataclass(frozen=True, slots=True)
class Actor:
    """Who acts. Build one with the class methods; the fields agree with `kind`:
    a `user` actor has a user (and maybe that user's membership), an `api_key` actor a key
    (and maybe an external actor id), the `system` actor neither."""

    kind: ActorType
    user: User | None = None
    api_key: ApiKey | None = None
    # The integrator's own id of the person behind a key's request (`X-Actor-Id`).
    external_actor_id: str = ""
    # The person's membership of the org at hand, when the caller already has it.
    membership: Membership | None = None

    def __post_init__(self) -> None:
        if self.kind == ActorType.USER:
            ok = (
                self.user is not None
                and self.api_key is None
                and not self.external_actor_id
                and (self.membership is None or self.membership.user_id == self.user.pk)
            )
        elif self.kind == ActorType.API_KEY:
            ok = self.api_key is not None and self.user is None and self.membership is None
        elif self.kind == ActorType.SYSTEM:
            ok = (
                self.user is None
                and self.api_key is None
                and self.membership is None
                and not self.external_actor_id
            )
        else:
            ok = False
        if not ok:
            raise ValueError(f"An actor of kind {self.kind!r} cannot carry these fields.")

    # ---- constructors ------------------------------------------------------------------------

    @classmethod
    def for_user(cls, user: User, *, membership: Membership | None = None) -> Actor:
        """A person (platform staff included); `membership`: theirs, in the org at hand."""
        return cls(ActorType.USER, user=user, membership=membership)

    @classmethod
    def for_member(cls, membership: Membership) -> Actor:
        """The person behind `membership`, acting in its org with its role."""
        return cls(ActorType.USER, user=membership.user, membership=membership)

    @classmethod
    def for_key(cls, api_key: ApiKey, *, external_actor_id: str = "") -> Actor:
        """An API key, on behalf of the integrator's user `external_actor_id` if named."""
        return cls(ActorType.API_KEY, api_key=api_key, external_actor_id=external_actor_id)

    @classmethod
    def system(cls) -> Actor:
        return _SYSTEM

    @classmethod
    def for_request(cls, request: HttpRequest | None) -> Actor:
        """The request's signed-in person, with the membership the tenancy machinery
        resolved for it (`orgs.tenancy.OrgMixin`) if any; else the system. A key's request
        has no person (`request.user` is not a `User`): API views use their `actor`."""
        user = getattr(request, "user", None) if request is not None else None
        if isinstance(user, User) and user.is_authenticated:
            membership = getattr(request, "membership", None)
            if not isinstance(membership, Membership) or membership.user_id != user.pk:
                membership = None
            return cls.for_user(user, membership=membership)
        return cls.system()

    @classmethod
    def signed_in(cls, request: HttpRequest) -> Actor:
        """The request's signed-in person (as `for_request`), for dashboard views: never
        the system, whose powers no page may borrow. Anonymous: PermissionDenied (403).
        """
        actor = cls.for_request(request)
        if actor.user is None:
            raise PermissionDenied("Sign in to do this.")
        return actor

    # ---- what the audit log records ------------------------------------------------------

    @property
    def audit_id(self) -> str:
        """The actor's stable id in the audit log: a key's public id; "" otherwise (a
        person is the event's `actor_user`)."""
        return str(self.api_key.public_id) if self.api_key is not None else ""

    @property
    def label(self) -> str:
        """The name the audit log and KYC history show: a key's display form, a person's
        email, or "system"."""
        if self.api_key is not None:
            return str(self.api_key.display or self.api_key.public_id)
        if self.user is not None:
            return self.user.email
        return SYSTEM_LABEL

    @property
    def is_system(self) -> bool:
        return self.kind == ActorType.SYSTEM


_SYSTEM = Actor(ActorType.SYSTEM)
