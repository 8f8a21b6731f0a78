"""The KYC endpoint (org keys) and the platform endpoints (system keys), under /api/v1/.

`GET, POST kyc` run on `OrgApiView` (scope `kyc:read` / `kyc:write`); the platform
endpoints on `SystemApiView` (scopes `platform_organizations:*`, `platform_kyc:*`): the
base refuses system keys on org endpoints and org keys on platform endpoints. Views call
the same services as the dashboard and the console. Documents appear as metadata only.

POST kyc takes JSON (documents base64-encoded, within the API's 1 MB body limit) or
multipart/form-data (file parts named `documents`), ADR 0052.
"""

from __future__ import annotations

import base64
import binascii
from collections.abc import Callable
from functools import cached_property
from typing import Any, TypeVar

from django.core.files.base import ContentFile
from django.http import Http404
from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.parsers import MultiPartParser
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.api_base import ApiJSONParser, OrgApiView, SystemApiView, validated
from apikeys.errors import ApiError
from apikeys.models import ApiKey
from apikeys.serializers import EmptySerializer
from orgs.actors import Actor
from orgs.models import Organization, OrgStatus
from platform_admin import selectors, services
from platform_admin import serializers as s
from platform_admin.models import KycApplication

T = TypeVar("T")

# PlatformError codes, mapped to the API's error table; the original travels as `reason`.
# ---- the org's KYC (org keys) ---------------------------------------------------------------


def _multipart_fields(request: Request) -> tuple[dict[str, Any], list[Any]]:
    """A multipart body as the JSON shape (without documents) plus its file parts."""
    data: Any = request.data  # a QueryDict for multipart bodies
    files = request.FILES.getlist("documents")
    fields: dict[str, Any] = {}
    for name in data:
        if name == "documents":
            continue
        fields[name] = data.getlist(name) if name == "keep_documents" else data.get(name)
    return fields, files


def _decode_documents(documents: list[dict[str, str]]) -> list[ContentFile[bytes]]:
    decoded = []
    for index, item in enumerate(documents):
        try:
            content = base64.b64decode(item["content_base64"], validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(
                "validation_error",
                "documents: content_base64 is not valid base64.",
                param=f"documents.{index}.content_base64",
            ) from None
        decoded.append(ContentFile(content, name=item["filename"]))
    return decoded


class KycApi(OrgApiView):
    """The organisation's KYC status and latest application; POST submits one."""

    resource = "kyc"
    parser_classes = [ApiJSONParser, MultiPartParser]
    # Its body may carry every document (config.middleware.BoundedBodyMiddleware).
    accepts_uploads = True

    def body(self) -> dict[str, Any]:
        application = selectors.kyc_application_current(org=self.org)
        return s.KycSerializer({"status": self.org.kyc_status, "application": application}).data

    @extend_schema(responses=s.KycSerializer, summary="Get the KYC status and application")
    def get(self, request: Request) -> Response:
        return Response(self.body())

    @extend_schema(
        request={
            "application/json": s.KycSubmitSerializer,
            "multipart/form-data": s.KycSubmitMultipartSerializer,
        },
        responses={201: s.KycSerializer},
        summary="Submit the KYC application",
    )
    def post(self, request: Request) -> Response:
        """Allowed while the status is `not_submitted` or `rejected` (409 `conflict` when
        pending or approved). One to five documents (PDF, PNG or JPEG by content, 10 MB
        each): base64 in JSON, or file parts named `documents` in multipart/form-data.
        `keep_documents` carries documents of a rejected application over."""
        if request.content_type.startswith("multipart/"):
            fields, files = _multipart_fields(request)
            data = validated(s.KycSubmitSerializer, fields)
        else:
            data = validated(s.KycSubmitSerializer, request.data)
            files = _decode_documents(data["documents"])
        services.kyc_submit(
            org=self.org,
            legal_name=data["legal_name"],
            registration_number=data["registration_number"],
            country=data["country"],
            address=data["address"],
            director_name=data["director_name"],
            documents=files,
            keep_documents=data["keep_documents"],
            actor=self.actor,
            request=request._request,
        )
        self.org.refresh_from_db()
        return Response(self.body(), status=status.HTTP_201_CREATED)


# ---- platform endpoints (system keys) -------------------------------------------------------


class PlatformApiView(SystemApiView):
    @cached_property
    def system_key(self) -> ApiKey:
        """The presenting system key's row (recorded as the actor of every change)."""
        return selectors.system_key_by_pk(pk=self.principal.key_id)

    @cached_property
    def actor(self) -> Actor:
        """The `actor=` of every service these endpoints call: the presenting system key."""
        return self.key_actor(self.system_key)

    def act(self, call: Callable[..., T], **kwargs: Any) -> T:
        return call(actor=self.actor, request=self.request._request, **kwargs)


def _org_or_404(org_id: str) -> Organization:
    org = selectors.organization_find_with_member_count(public_id=org_id)
    if org is None:
        raise ApiError("not_found", "No such organisation.")
    return org


class PlatformOrganizationListApi(PlatformApiView):
    """Every organisation; POST creates one for a customer."""

    resource = "platform_organizations"

    @extend_schema(
        parameters=[s.PlatformOrgFilterSerializer],
        responses=s.PlatformOrganizationSerializer(many=True),
        summary="List organisations",
        tags=["platform"],
    )
    def get(self, request: Request) -> Response:
        filters = validated(s.PlatformOrgFilterSerializer, request.query_params)
        queryset = selectors.organization_search(
            query=filters.get("q", ""), status=filters.get("status", "")
        )
        return self.paginate(queryset, s.PlatformOrganizationSerializer)

    @extend_schema(
        request=s.PlatformOrgCreateSerializer,
        responses={201: s.PlatformOrganizationSerializer},
        summary="Create an organisation",
        tags=["platform"],
    )
    def post(self, request: Request) -> Response:
        data = validated(s.PlatformOrgCreateSerializer, request.data)
        org = self.act(
            services.platform_org_create,
            name=data["name"],
            slug=data["slug"],
            owner_email=data["owner_email"],
            plan=data["plan"],
        )
        return Response(
            s.PlatformOrganizationSerializer(_org_or_404(org.public_id)).data,
            status=status.HTTP_201_CREATED,
        )


class PlatformOrganizationDetailApi(PlatformApiView):
    """One organisation; PATCH changes its plan, status (suspend / reactivate) and custom
    limits."""

    resource = "platform_organizations"

    @extend_schema(
        responses=s.PlatformOrganizationSerializer,
        summary="Get an organisation",
        tags=["platform"],
    )
    def get(self, request: Request, org_id: str) -> Response:
        return Response(s.PlatformOrganizationSerializer(_org_or_404(org_id)).data)

    @extend_schema(
        request=s.PlatformOrgUpdateSerializer,
        responses=s.PlatformOrganizationSerializer,
        summary="Change an organisation's plan, status or limits",
        tags=["platform"],
    )
    def patch(self, request: Request, org_id: str) -> Response:
        """`status: suspended` makes the API refuse every key of the org at once (403
        `org_suspended`); `active` lifts it. Each change is an audit event on the org's
        log naming the system key."""
        org = _org_or_404(org_id)
        data = validated(s.PlatformOrgUpdateSerializer, request.data)
        if "plan" in data:
            self.act(services.org_set_plan, org=org, plan=data["plan"])
        if "custom_limits" in data:
            given = data["custom_limits"]
            self.act(
                services.org_set_limits,
                org=org,
                per_minute=given.get("per_minute", org.custom_per_minute),
                burst=given.get("burst", org.custom_burst),
                monthly=given.get("monthly", org.custom_monthly),
            )
        if data.get("status") == OrgStatus.SUSPENDED:
            self.act(services.org_suspend, org=org, reason=data.get("suspension_reason", ""))
        elif data.get("status") == OrgStatus.ACTIVE:
            self.act(services.org_reactivate, org=org)
        return Response(s.PlatformOrganizationSerializer(_org_or_404(org_id)).data)


def _application_or_404(kyc_id: str) -> KycApplication:
    try:
        return selectors.kyc_application_get(public_id=kyc_id)
    except Http404:
        raise ApiError("not_found", "No such KYC application.") from None


class PlatformKycListApi(PlatformApiView):
    """KYC applications of every organisation, oldest first (the review order)."""

    resource = "platform_kyc"

    @extend_schema(
        parameters=[s.PlatformKycFilterSerializer],
        responses=s.PlatformKycApplicationSerializer(many=True),
        summary="List KYC applications",
        tags=["platform"],
    )
    def get(self, request: Request) -> Response:
        filters = validated(s.PlatformKycFilterSerializer, request.query_params)
        queryset = selectors.kyc_application_all(
            status=filters.get("status"), organization=filters.get("organization")
        )
        return self.paginate(
            queryset, s.PlatformKycApplicationSerializer, ordering=("submitted_at", "id")
        )


class PlatformKycDetailApi(PlatformApiView):
    resource = "platform_kyc"

    @extend_schema(
        responses=s.PlatformKycApplicationSerializer,
        summary="Get a KYC application",
        tags=["platform"],
    )
    def get(self, request: Request, kyc_id: str) -> Response:
        return Response(s.PlatformKycApplicationSerializer(_application_or_404(kyc_id)).data)


class PlatformKycApproveApi(PlatformApiView):
    resource = "platform_kyc"

    @extend_schema(
        request=None,
        responses=s.PlatformKycApplicationSerializer,
        summary="Approve a pending KYC application",
        tags=["platform"],
    )
    def post(self, request: Request, kyc_id: str) -> Response:
        """The org's KYC becomes `approved` (live keys open up) and its owners and admins
        are emailed. 409 `conflict` unless the application is pending."""
        application = _application_or_404(kyc_id)
        validated(EmptySerializer, request.data)
        self.act(services.kyc_approve, application=application)
        return Response(s.PlatformKycApplicationSerializer(_application_or_404(kyc_id)).data)


class PlatformKycRejectApi(PlatformApiView):
    resource = "platform_kyc"

    @extend_schema(
        request=s.KycRejectSerializer,
        responses=s.PlatformKycApplicationSerializer,
        summary="Reject a pending KYC application",
        tags=["platform"],
    )
    def post(self, request: Request, kyc_id: str) -> Response:
        """`reason` is required: it is shown to the org and emailed to its owners and
        admins. 409 `conflict` unless the application is pending."""
        application = _application_or_404(kyc_id)
        data = validated(s.KycRejectSerializer, request.data)
        self.act(services.kyc_reject, application=application, reason=data["reason"])
        return Response(s.PlatformKycApplicationSerializer(_application_or_404(kyc_id)).data)
