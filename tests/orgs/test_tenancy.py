"""Tenancy a view cannot forget (ADR 0002): every org URL is built on OrgMixin, declares a
role, and answers another org's or an absent org's pages with the same 404."""

from __future__ import annotations

import re
from collections.abc import Iterator

import pytest
from django.test import Client
from django.urls import URLPattern, URLResolver, get_resolver

from accounts.models import User
from config.urls import org_urlpatterns
from orgs.actors import Actor
from orgs.models import ROLE_RANK, Membership, Organization, Role
from orgs.tenancy import OrgMixin
from tests.conftest import signed_in_client
from tests.factories import MembershipFactory, UserFactory

ORG_PREFIX = "o/<orgslug:org_slug>/"


def _walk(
    patterns: list[URLPattern | URLResolver], prefix: str = ""
) -> Iterator[tuple[str, URLPattern]]:
    for entry in patterns:
        if isinstance(entry, URLResolver):
            yield from _walk(entry.url_patterns, prefix + str(entry.pattern))
        else:
            yield prefix + str(entry.pattern), entry


ORG_PATTERNS = list(_walk(org_urlpatterns))
# Org pages whose only URL argument is the org slug: requested for real below.
SLUG_ONLY_ROUTES = [route for route, _ in ORG_PATTERNS if "<" not in route]


def test_org_patterns_include_this_apps_pages() -> None:
    routes = {route for route, _ in ORG_PATTERNS}
    assert {"", "members/", "settings/", "members/invite/"} <= routes


@pytest.mark.parametrize(
    ("route", "pattern"), ORG_PATTERNS, ids=[r or "/" for r, _ in ORG_PATTERNS]
)
def test_every_org_url_is_served_by_an_org_mixin_view_with_a_role(
    route: str, pattern: URLPattern
) -> None:
    view_class = getattr(pattern.callback, "view_class", None)
    assert view_class is not None, f"/o/<slug>/{route} is a function view, not built on OrgMixin"
    assert issubclass(view_class, OrgMixin), f"{view_class.__name__} is not an OrgMixin view"
    assert view_class.required_role in ROLE_RANK, f"{view_class.__name__} declares no role"


def test_no_url_outside_the_org_mount_takes_an_org_slug() -> None:
    """An org page mounted anywhere else would escape the walk above."""
    offenders = []
    for route, pattern in _walk(get_resolver().url_patterns):
        if "org_slug" not in route:
            continue
        view_class = getattr(pattern.callback, "view_class", None)
        if not route.startswith(ORG_PREFIX) or not (
            view_class is not None and issubclass(view_class, OrgMixin)
        ):
            offenders.append(route)
    assert offenders == []


@pytest.fixture
def acme_owner(org: Organization) -> User:
    return MembershipFactory.create(
        org=org, user=UserFactory.create(email="boss@acme.test"), role=Role.OWNER
    ).user


@pytest.mark.django_db
@pytest.mark.parametrize("route", SLUG_ONLY_ROUTES, ids=[r or "/" for r in SLUG_ONLY_ROUTES])
@pytest.mark.parametrize("method", ["get", "post"])
def test_another_orgs_page_is_the_same_404_as_an_absent_org(
    route: str, method: str, acme_owner: User, other_org: Organization
) -> None:
    MembershipFactory.create(org=other_org, role=Role.OWNER)
    client = signed_in_client(acme_owner)
    theirs = getattr(client, method)(f"/o/{other_org.slug}/{route}")
    absent = getattr(client, method)(f"/o/no-such-org/{route}")
    assert theirs.status_code == absent.status_code == 404
    assert other_org.name.encode() not in theirs.content
    # The same page of the user's own org is reachable (not a blanket 404).
    mine = client.get(f"/o/acme/{route}")
    assert mine.status_code in (200, 405)


@pytest.mark.django_db
@pytest.mark.parametrize("route", SLUG_ONLY_ROUTES, ids=[r or "/" for r in SLUG_ONLY_ROUTES])
def test_anonymous_visitors_are_sent_to_sign_in(route: str, org: Organization) -> None:
    response = Client().get(f"/o/acme/{route}")
    assert response.status_code == 302
    assert response["Location"].startswith("/login/?next=")


@pytest.fixture
def foreign(other_org: Organization) -> dict[str, str]:
    """Ids of another org's member and invitation, for object-level cross-org checks."""
    from orgs.services import member_invite

    theirs = MembershipFactory.create(org=other_org, role=Role.OWNER)
    stranger = MembershipFactory.create(org=other_org, role=Role.MEMBER)
    invitation = member_invite(
        org=other_org, email="x@globex.test", role="member", actor=Actor.for_user(theirs.user)
    )
    return {"member": stranger.public_id, "invitation": invitation.public_id}


OBJECT_ROUTES = [
    ("post", "members/{member}/role/", {"role": "admin"}),
    ("get", "members/{member}/remove/", {}),
    ("post", "members/{member}/remove/", {}),
    ("post", "invitations/{invitation}/resend/", {}),
    ("post", "invitations/{invitation}/cancel/", {}),
    ("post", "settings/transfer/", {"membership": "{member}"}),
]


def test_object_routes_cover_every_org_route_with_an_id() -> None:
    with_ids = {re.sub(r"<[^>]+>", "{}", r) for r, _ in ORG_PATTERNS if "<" in r}
    covered = {re.sub(r"\{[a-z]+\}", "{}", r) for _, r, _ in OBJECT_ROUTES}
    # Other apps add their own id routes; they carry their own cross-org tests.
    mine = {r for r in with_ids if r.startswith(("members/", "invitations/"))}
    assert mine <= covered


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "route", "data"), OBJECT_ROUTES)
def test_another_orgs_member_or_invitation_is_a_404_inside_my_org(
    method: str,
    route: str,
    data: dict[str, str],
    owner: User,
    org: Organization,
    foreign: dict[str, str],
) -> None:
    client = signed_in_client(owner)
    url = f"/o/acme/{route.format(**foreign)}"
    payload = {k: v.format(**foreign) for k, v in data.items()}
    response = getattr(client, method)(url, payload)
    assert response.status_code == 404
    # Nothing happened to the other org's objects.
    from orgs.models import Invitation

    assert Membership.objects.get(public_id=foreign["member"]).role == Role.MEMBER
    assert Invitation.objects.get(public_id=foreign["invitation"]).is_usable


# Pages, the least role they need, and what that role gets (an empty POST is a form with
# errors: 400; deletion without the typed slug goes back to the settings page); each
# lower role gets a 403.
ROLE_PAGES = [
    ("get", "", Role.MEMBER, 200),
    ("get", "members/", Role.MEMBER, 200),
    ("get", "members/leave/", Role.MEMBER, 200),
    ("get", "members/invite/", Role.ADMIN, 200),
    ("post", "members/invite/", Role.ADMIN, 400),
    ("get", "settings/", Role.ADMIN, 200),
    ("post", "settings/", Role.ADMIN, 400),
    ("post", "settings/transfer/", Role.OWNER, 400),
    ("post", "settings/delete/", Role.OWNER, 302),
]


@pytest.mark.django_db
@pytest.mark.parametrize(("method", "route", "needed", "allowed"), ROLE_PAGES)
@pytest.mark.parametrize("role", [Role.MEMBER, Role.ADMIN, Role.OWNER])
def test_each_page_needs_its_role(
    method: str, route: str, needed: str, allowed: int, role: str, org: Organization
) -> None:
    MembershipFactory.create(org=org, role=Role.OWNER)
    membership = MembershipFactory.create(org=org, role=role)
    response = getattr(signed_in_client(membership.user), method)(f"/o/acme/{route}")
    if ROLE_RANK[role] < ROLE_RANK[needed]:
        assert response.status_code == 403
    else:
        assert response.status_code == allowed
    assert Organization.objects.filter(pk=org.pk).exists()  # nothing was deleted


@pytest.mark.django_db
@pytest.mark.parametrize(
    "route",
    ["members/{member}/role/", "members/{member}/remove/", "invitations/{invitation}/cancel/"],
)
def test_members_cannot_use_member_actions(
    route: str, owner: User, member_user: User, org: Organization
) -> None:
    from orgs.services import member_invite

    invitation = member_invite(
        org=org, email="x@example.com", role="member", actor=Actor.for_user(owner)
    )
    ids = {
        "member": Membership.objects.get(user=owner).public_id,
        "invitation": invitation.public_id,
    }
    response = signed_in_client(member_user).post(
        f"/o/acme/{route.format(**ids)}", {"role": "member"}
    )
    assert response.status_code == 403
    assert Membership.objects.get(user=owner).role == Role.OWNER
