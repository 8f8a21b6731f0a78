"""The organisation's endpoints of the public API (docs/api.md), mounted under /api/v1/:
the organisation, members, invitations, sign-in links and the audit log.

Built like every API view (`apikeys.api_base`): each declares the scope-registry
`resource` it guards, validates input with a serializer, calls one service or selector and
shapes the output. The org always comes from the key (`self.org`).
"""

from __future__ import annotations

from typing import Any

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.services import sign_in_link_create
from apikeys import serializers as s
from apikeys.api_base import OrgApiView, validated
from apikeys.errors import ApiError
from orgs.models import Membership, Organization
from orgs.selectors import (
    audit_event_list_for_key,
    invitation_get,
    invitation_list,
    membership_find,
    membership_get,
    membership_list,
)
from orgs.services import (
    invitation_cancel,
    invitation_resend,
    member_invite,
    membership_change_role,
    membership_remove,
    org_update_settings,
)

# ---- organization ---------------------------------------------------------------------------


class OrganizationApi(OrgApiView):
    """The key's organisation."""

    resource = "organization"

    @extend_schema(responses=s.OrganizationSerializer, summary="Get the organisation")
    def get(self, request: Request) -> Response:
        return Response(s.OrganizationSerializer(self.org).data)

    @extend_schema(
        request=s.OrganizationUpdateSerializer,
        responses=s.OrganizationSerializer,
        summary="Rename the organisation",
    )
    def patch(self, request: Request) -> Response:
        """Only `name` can be changed through the API (ADR 0042): the slug and the two-factor
        policy are changed by an owner in the dashboard."""
        data = validated(s.OrganizationUpdateSerializer, request.data)
        org: Organization = org_update_settings(
            org=self.org,
            name=data["name"],
            slug=self.org.slug,
            require_two_factor=self.org.require_two_factor,
            actor=self.actor,
            request=request._request,
        )
        return Response(s.OrganizationSerializer(org).data)


# ---- members --------------------------------------------------------------------------------


class MemberListApi(OrgApiView):
    """Members of the organisation; POST invites someone by email."""

    resource = "members"

    @extend_schema(
        responses=s.MemberSerializer(many=True),
        summary="List members",
    )
    def get(self, request: Request) -> Response:
        validated(s.PageSerializer, request.query_params)
        return self.paginate(
            membership_list(org=self.org), s.MemberSerializer, ordering=("created_at", "id")
        )

    @extend_schema(
        request=s.MemberInviteSerializer,
        responses={201: s.InvitationSerializer},
        summary="Invite a member",
    )
    def post(self, request: Request) -> Response:
        """Emails an invitation valid for 7 days. A key acts with an admin's powers: it cannot
        invite owners."""
        data = validated(s.MemberInviteSerializer, request.data)
        invitation = member_invite(
            org=self.org,
            email=data["email"],
            role=data["role"],
            actor=self.actor,
            request=request._request,
        )
        return Response(s.InvitationSerializer(invitation).data, status=status.HTTP_201_CREATED)


class InvitationListApi(OrgApiView):
    """The organisation's invitations, newest first (`POST members` sends one)."""

    resource = "members"

    @extend_schema(responses=s.InvitationSerializer(many=True), summary="List invitations")
    def get(self, request: Request) -> Response:
        validated(s.PageSerializer, request.query_params)
        return self.paginate(
            invitation_list(org=self.org), s.InvitationSerializer, ordering=("-sent_at", "-id")
        )


class SignInLinkApi(OrgApiView):
    """Single-use sign-in links for members, for the operator's own pages
    (docs/api.md, `POST sign-in-links`)."""

    resource = "sign_in_links"
    actions = {"POST": "create"}

    @extend_schema(
        request=s.SignInLinkCreateSerializer,
        responses={201: s.SignInLinkSerializer},
        summary="Create a sign-in link for a member",
    )
    def post(self, request: Request) -> Response:
        """The link signs the member in through the usual confirmation page (their second
        factor still applies), once, before `expires_at`. Never for platform staff."""
        data = validated(s.SignInLinkCreateSerializer, request.data)
        link = sign_in_link_create(
            org=self.org,
            email=data["email"],
            ttl_minutes=data.get("ttl_minutes"),
            next_url=data.get("next", ""),
            actor=self.actor,
            request=request._request,
        )
        return Response(s.SignInLinkSerializer(link).data, status=status.HTTP_201_CREATED)


class InvitationBase(OrgApiView):
    resource = "members"

    def invitation(self, invitation_id: str) -> Any:
        """One of the org's invitations; another org's is a 404 like an absent one."""
        return invitation_get(org=self.org, public_id=invitation_id)

    def act(self, service: Any, invitation_id: str) -> Response:
        """Run an invitation service as the presenting key (with an admin's powers)."""
        invitation = service(
            invitation=self.invitation(invitation_id),
            actor=self.actor,
            request=self.request._request,
        )
        return Response(s.InvitationSerializer(invitation).data)


class InvitationDetailApi(InvitationBase):
    """One invitation."""

    @extend_schema(responses=s.InvitationSerializer, summary="Get an invitation")
    def get(self, request: Request, invitation_id: str) -> Response:
        return Response(s.InvitationSerializer(self.invitation(invitation_id)).data)


class InvitationResendApi(InvitationBase):
    """Email an open invitation again with a fresh link and 7 more days; the old link stops
    working. A key acts with an admin's powers: it cannot touch owner invitations."""

    @extend_schema(request=None, responses=s.InvitationSerializer, summary="Resend an invitation")
    def post(self, request: Request, invitation_id: str) -> Response:
        return self.act(invitation_resend, invitation_id)


class InvitationCancelApi(InvitationBase):
    """Close an open invitation: its link stops working at once."""

    @extend_schema(request=None, responses=s.InvitationSerializer, summary="Cancel an invitation")
    def post(self, request: Request, invitation_id: str) -> Response:
        return self.act(invitation_cancel, invitation_id)


class MemberDetailApi(OrgApiView):
    """One member. A key acts with an admin's powers: it manages members, not owners or
    other admins, and the last owner is never removed or demoted."""

    resource = "members"

    def member(self, member_id: str) -> Membership:
        membership = membership_find(org=self.org, public_id=member_id)
        if membership is None:
            raise ApiError("not_found", "No such member.")
        return membership

    @extend_schema(responses=s.MemberSerializer, summary="Get a member")
    def get(self, request: Request, member_id: str) -> Response:
        return Response(s.MemberSerializer(self.member(member_id)).data)

    @extend_schema(
        request=s.MemberUpdateSerializer,
        responses=s.MemberSerializer,
        summary="Change a member's role",
    )
    def patch(self, request: Request, member_id: str) -> Response:
        membership = membership_get(org=self.org, public_id=member_id)
        data = validated(s.MemberUpdateSerializer, request.data)
        membership_change_role(
            membership=membership,
            role=data["role"],
            actor=self.actor,
            request=request._request,
        )
        return Response(s.MemberSerializer(self.member(member_id)).data)

    @extend_schema(responses={204: None}, summary="Remove a member")
    def delete(self, request: Request, member_id: str) -> Response:
        membership = membership_get(org=self.org, public_id=member_id)
        membership_remove(
            membership=membership,
            actor=self.actor,
            request=request._request,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


# ---- audit events ---------------------------------------------------------------------------


class AuditEventListApi(OrgApiView):
    """The organisation's audit log, newest first."""

    resource = "audit_log"

    @extend_schema(
        parameters=[s.AuditEventFilterSerializer],
        responses=s.AuditEventSerializer(many=True),
        summary="List audit events",
    )
    def get(self, request: Request) -> Response:
        filters = validated(s.AuditEventFilterSerializer, request.query_params)
        events = audit_event_list_for_key(
            org=self.org, environment=self.principal.environment, **filters
        )
        return self.paginate(events, s.AuditEventSerializer)
