"""DRF endpoints of the public API (docs/api.md), mounted under /api/v1/.

Each view is built on a base of `apikeys.api_base` and declares the scope-registry
`resource` it guards; the base runs the whole pipeline (authentication, org checks, scope,
hooks) before any code here. Views validate input with a serializer, call one service or
selector, and shape the output. The org always comes from the key (`self.org`).
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from django.db.models import QuerySet
from django.http import HttpResponse
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.renderers import JSONRenderer
from rest_framework.request import Request
from rest_framework.response import Response

from accounts.services import AccountError, sign_in_link_create
from apikeys import serializers as s
from apikeys.api_base import AnyKeyApiView, OrgApiView, PublicApiView
from apikeys.errors import ApiError
from apikeys.models import ApiKey, Environment
from apikeys.scopes import (
    actions_in_use,
    all_resources,
    missing_scopes,
    preset_scopes,
    presets,
)
from apikeys.selectors import apikey_get, apikey_list, apikey_public_ids
from apikeys.services import (
    apikey_create,
    apikey_delete,
    apikey_revoke,
    apikey_rotate,
    apikey_update,
)
from orgs.models import Membership, Organization
from orgs.selectors import (
    audit_event_list,
    invitation_get,
    invitation_list,
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


class PingApi(PublicApiView):
    """Liveness: no key, no database. The benchmark's baseline."""

    @extend_schema(responses=s.OkSerializer, summary="Liveness check", tags=["meta"])
    def get(self, request: Request) -> Response:
        return Response({"ok": True})


class NotFoundApi(PublicApiView):
    """Every other path under /api/ and /gateway/: 404 `not_found` in the error shape, any
    method."""

    schema = None

    def run_handler(self, request: Request, *args: Any, **kwargs: Any) -> Response:
        raise ApiError("not_found", "No such endpoint.")


class MeApi(AnyKeyApiView):
    """The presenting key, its organisation and its rate limits. Any valid key."""

    @extend_schema(responses=s.MeSerializer, summary="The calling key", tags=["meta"])
    def get(self, request: Request) -> HttpResponse:
        # The body depends on the principal only, an immutable value built once per process
        # and cache entry: it is rendered once per principal (docs/performance.md).
        p = self.principal
        found = _me_bodies.get(id(p))
        if found is None or found[0] is not p:
            if len(_me_bodies) >= _ME_BODIES_MAX:
                _me_bodies.clear()
            found = _me_bodies[id(p)] = (p, _ME_RENDERER.render(me_body(p)))
        return HttpResponse(found[1], content_type=_ME_RENDERER.media_type)


_ME_RENDERER = JSONRenderer()
_ME_BODIES_MAX = 4096
# id(principal) -> (principal, rendered body); the principal is kept so an id reused by
# another object after garbage collection can never match.
_me_bodies: dict[int, tuple[Any, bytes]] = {}


def me_body(p: Any) -> dict[str, Any]:
    """`GET me` in the schema's shape (`MeSerializer`, which documents it)."""
    body: dict[str, Any] = {
        "object": "me",
        "key": {
            "id": p.public_id,
            "name": p.name,
            "environment": p.environment,
            "scopes": sorted(p.scopes),
            "display": p.display,
            "expires_at": _iso(p.expires_at),
            "meta": dict(p.meta),
            "leaked": p.leaked,
        },
        "organization": None,
        "rate_limits": None,
    }
    if not p.is_system:
        body["organization"] = {
            "id": p.org_public_id,
            "slug": p.org_slug,
            "name": p.org_name,
            "plan": p.org_plan,
            "kyc_status": p.org_kyc_status,
            "status": p.org_status,
        }
    if p.limits is not None:
        body["rate_limits"] = {
            "per_minute": p.limits.per_minute,
            "burst": p.limits.burst,
            "monthly": p.limits.monthly,
        }
    return body


class ScopeCatalogueApi(AnyKeyApiView):
    """The resources, actions and presets keys of the caller's kind can hold. Any valid key."""

    @extend_schema(
        responses=s.ScopeCatalogueSerializer, summary="Scopes keys can hold", tags=["meta"]
    )
    def get(self, request: Request) -> Response:
        return Response(scope_catalogue(system=self.principal.is_system))


def scope_catalogue(*, system: bool) -> dict[str, Any]:
    """`GET scopes`: the registry as data (org resources, or system ones for system keys)."""
    return {
        "object": "scope_catalogue",
        "actions": actions_in_use(system),
        "resources": [
            {
                "name": r.name,
                "label": r.label,
                "description": r.description,
                "actions": list(r.actions),
                "implies": {a: sorted(r.grants(a) - {a}) for a in r.actions if r.grants(a) - {a}},
                "scopes": list(r.scopes),
            }
            for r in all_resources(system)
        ],
        "presets": [
            {
                "name": p.name,
                "label": p.label,
                "description": p.description,
                "scopes": preset_scopes(p),
            }
            for p in presets(system)
        ],
    }


def _iso(moment: datetime | None) -> str | None:
    """A datetime as DRF's `DateTimeField` writes it: ISO 8601 in UTC with `Z`."""
    if moment is None:
        return None
    text = moment.astimezone(UTC).isoformat()
    return text[:-6] + "Z" if text.endswith("+00:00") else text


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
        data = _valid(s.OrganizationUpdateSerializer, request.data)
        org: Organization = org_update_settings(
            org=self.org,
            name=data["name"],
            slug=self.org.slug,
            require_two_factor=self.org.require_two_factor,
            actor=None,
            request=request._request,
            actor_api_key=self.api_key,
            external_actor_id=self.external_actor_id,
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
        _valid(s.PageSerializer, request.query_params)
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
        data = _valid(s.MemberInviteSerializer, request.data)
        invitation = member_invite(
            org=self.org,
            email=data["email"],
            role=data["role"],
            invited_by=None,
            request=request._request,
            actor_api_key=self.api_key,
            external_actor_id=self.external_actor_id,
        )
        return Response(s.InvitationSerializer(invitation).data, status=status.HTTP_201_CREATED)


class InvitationListApi(OrgApiView):
    """The organisation's invitations, newest first (`POST members` sends one)."""

    resource = "members"

    @extend_schema(responses=s.InvitationSerializer(many=True), summary="List invitations")
    def get(self, request: Request) -> Response:
        _valid(s.PageSerializer, request.query_params)
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
        data = _valid(s.SignInLinkCreateSerializer, request.data)
        try:
            link = sign_in_link_create(
                org=self.org,
                email=data["email"],
                ttl_minutes=data.get("ttl_minutes"),
                next_url=data.get("next", ""),
                api_key=self.api_key,
                request=request._request,
                external_actor_id=self.external_actor_id,
            )
        except AccountError as exc:
            if exc.code == "staff":
                raise ApiError("permission_denied", exc.message) from None
            raise ApiError("validation_error", exc.message, param="email") from None
        return Response(s.SignInLinkSerializer(link).data, status=status.HTTP_201_CREATED)


class InvitationBase(OrgApiView):
    resource = "members"

    def invitation(self, invitation_id: str) -> Any:
        """One of the org's invitations; another org's is a 404 like an absent one."""
        return invitation_get(org=self.org, public_id=invitation_id)


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
        invitation = invitation_resend(
            invitation=self.invitation(invitation_id),
            actor_membership=None,
            request=request._request,
            actor_api_key=self.api_key,
            external_actor_id=self.external_actor_id,
        )
        return Response(s.InvitationSerializer(invitation).data)


class InvitationCancelApi(InvitationBase):
    """Close an open invitation: its link stops working at once."""

    @extend_schema(request=None, responses=s.InvitationSerializer, summary="Cancel an invitation")
    def post(self, request: Request, invitation_id: str) -> Response:
        invitation = invitation_cancel(
            invitation=self.invitation(invitation_id),
            actor_membership=None,
            request=request._request,
            actor_api_key=self.api_key,
            external_actor_id=self.external_actor_id,
        )
        return Response(s.InvitationSerializer(invitation).data)


class MemberDetailApi(OrgApiView):
    """One member. A key acts with an admin's powers: it manages members, not owners or
    other admins, and the last owner is never removed or demoted."""

    resource = "members"

    def member(self, member_id: str) -> Membership:
        # Through the list selector so the member carries `has_two_factor` like in lists.
        membership = membership_list(org=self.org).filter(public_id=member_id).first()
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
        data = _valid(s.MemberUpdateSerializer, request.data)
        membership_change_role(
            membership=membership,
            role=data["role"],
            actor_membership=None,
            request=request._request,
            actor_api_key=self.api_key,
            external_actor_id=self.external_actor_id,
        )
        return Response(s.MemberSerializer(self.member(member_id)).data)

    @extend_schema(responses={204: None}, summary="Remove a member")
    def delete(self, request: Request, member_id: str) -> Response:
        membership = membership_get(org=self.org, public_id=member_id)
        membership_remove(
            membership=membership,
            actor_membership=None,
            request=request._request,
            actor_api_key=self.api_key,
            external_actor_id=self.external_actor_id,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


# ---- API keys -------------------------------------------------------------------------------


class ApiKeyBase(OrgApiView):
    """Key endpoints. A test key sees and manages test keys only: live keys are a 404 to
    it, as another org's keys are (ADR 0043)."""

    resource = "api_keys"

    def visible_keys(
        self, *, environment: str | None = None, status: str | None = None
    ) -> QuerySet[ApiKey]:
        wanted = environment
        if self.principal.environment == Environment.TEST:
            environment = Environment.TEST  # a test key sees test keys only
        keys = apikey_list(org=self.org, environment=environment, status=status)
        if wanted not in (None, environment):
            keys = keys.none()
        return keys.select_related("created_by_key", "predecessor")

    def key(self, key_id: str) -> ApiKey:
        key = apikey_get(org=self.org, public_id=key_id)
        if self.principal.environment == Environment.TEST and key.environment != Environment.TEST:
            raise ApiError("not_found", "No such API key.")
        return key

    def check_may_hold(self, key: ApiKey) -> None:
        """A key acts on keys whose every scope it holds itself (no escalation)."""
        missing = missing_scopes(self.principal.scopes, key.scopes)
        if missing:
            raise ApiError(
                "insufficient_scope",
                f"The key making this request lacks the scope '{missing[0]}' that the "
                "target key holds.",
                required_scope=missing[0],
            )

    def created(self, key: ApiKey, secret: str) -> Response:
        data = s.ApiKeyWithSecretSerializer(key, context={"secret": secret}).data
        return Response(data, status=status.HTTP_201_CREATED)


class ApiKeyListApi(ApiKeyBase):
    """The organisation's keys (never their secrets); POST creates one."""

    @extend_schema(
        responses=s.ApiKeySerializer(many=True),
        parameters=[s.ApiKeyListQuerySerializer],
        summary="List API keys",
    )
    def get(self, request: Request) -> Response:
        """Filter by `status` (as of now) and `environment`; a test key sees test keys."""
        query = _valid(s.ApiKeyListQuerySerializer, request.query_params)
        keys = self.visible_keys(environment=query.get("environment"), status=query.get("status"))
        return self.paginate(keys, s.ApiKeySerializer)

    @extend_schema(
        request=s.ApiKeyCreateSerializer,
        responses={201: s.ApiKeyWithSecretSerializer},
        summary="Create an API key",
    )
    def post(self, request: Request) -> Response:
        """Returns the secret once, in this response. The new key can hold only scopes the
        calling key holds; a test key creates test keys only; live keys need the
        organisation's KYC approved."""
        data = _valid(s.ApiKeyCreateSerializer, request.data)
        key, secret = apikey_create(
            org=self.org,
            name=data["name"],
            environment=data["environment"],
            scopes=data["scopes"],
            expires_at=data["expires_at"],
            meta=data["meta"],
            allowed_ips=data["allowed_ips"],
            allowed_ips_mode=data["allowed_ips_mode"],
            created_by_key=self.api_key,
            request=request._request,
            external_actor_id=self.external_actor_id,
        )
        return self.created(key, secret)


class ApiKeyDetailApi(ApiKeyBase):
    """One key; PATCH edits its scopes and IP allowlist; DELETE removes it from every list
    and stops it at once."""

    @extend_schema(responses=s.ApiKeySerializer, summary="Get an API key")
    def get(self, request: Request, key_id: str) -> Response:
        return Response(s.ApiKeySerializer(self.key(key_id)).data)

    @extend_schema(
        request=s.ApiKeyUpdateSerializer,
        responses=s.ApiKeySerializer,
        summary="Edit an API key's scopes or IP allowlist",
    )
    def patch(self, request: Request, key_id: str) -> Response:
        """`scopes` replaces the key's scopes with a subset of the calling key's own (the
        calling key must also hold every scope the edited key holds now). `allowed_ips` and
        `allowed_ips_mode` set where it may be used from. In force from the next request,
        in every worker; audited as `api_key.updated`."""
        key = self.key(key_id)
        data = _valid(s.ApiKeyUpdateSerializer, request.data)
        self.check_may_hold(key)
        apikey_update(
            key=key,
            actor_key=self.api_key,
            request=request._request,
            external_actor_id=self.external_actor_id,
            **data,
        )
        return Response(s.ApiKeySerializer(_reload(self, key)).data)

    @extend_schema(responses={204: None}, summary="Delete an API key")
    def delete(self, request: Request, key_id: str) -> Response:
        key = self.key(key_id)
        apikey_delete(
            key=key,
            actor_key=self.api_key,
            request=request._request,
            external_actor_id=self.external_actor_id,
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class ApiKeyRotateApi(ApiKeyBase):
    """Issue a successor with a new secret; the old key works for `grace_period` more."""

    @extend_schema(
        request=s.ApiKeyRotateSerializer,
        responses={201: s.ApiKeyWithSecretSerializer},
        summary="Rotate an API key",
    )
    def post(self, request: Request, key_id: str) -> Response:
        """Returns the successor and its secret once. The old key keeps working for
        `grace_period` seconds, then fails as expired. The calling key must hold every scope
        of the key it rotates."""
        key = self.key(key_id)
        data = _valid(s.ApiKeyRotateSerializer, request.data)
        self.check_may_hold(key)
        successor, secret = apikey_rotate(
            key=key,
            grace=timedelta(seconds=data["grace_period"]),
            actor_key=self.api_key,
            request=request._request,
            external_actor_id=self.external_actor_id,
        )
        return self.created(_reload(self, successor), secret)


class ApiKeyRevokeApi(ApiKeyBase):
    """Revoke a key at once and for good."""

    @extend_schema(
        request=s.EmptySerializer, responses=s.ApiKeySerializer, summary="Revoke an API key"
    )
    def post(self, request: Request, key_id: str) -> Response:
        key = self.key(key_id)
        _valid(s.EmptySerializer, request.data)
        apikey_revoke(
            key=key,
            actor_key=self.api_key,
            request=request._request,
            external_actor_id=self.external_actor_id,
        )
        return Response(s.ApiKeySerializer(_reload(self, key)).data)


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
        filters = _valid(s.AuditEventFilterSerializer, request.query_params)
        events = audit_event_list(org=self.org, **filters)
        if self.principal.environment == Environment.TEST:
            # A test key knows nothing of live keys: not their events, not their names.
            live = apikey_public_ids(org=self.org, environment=Environment.LIVE)
            events = events.exclude(target_id__in=live).exclude(actor_id__in=live)
        return self.paginate(events, s.AuditEventSerializer)


# ---- helpers --------------------------------------------------------------------------------


def _valid(serializer_class: type[s.StrictSerializer], data: Any) -> dict[str, Any]:
    serializer = serializer_class(data=data)
    serializer.is_valid(raise_exception=True)
    return dict(serializer.validated_data)


def _reload(view: ApiKeyBase, key: ApiKey) -> ApiKey:
    """The key as lists show it (with creator and predecessor), after a write."""
    return view.visible_keys().get(pk=key.pk) if key.deleted_at is None else key
