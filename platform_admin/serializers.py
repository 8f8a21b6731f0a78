"""Request and response shapes of the KYC and platform endpoints.

Types only: the rules (state machine, document checks, role rules) live in
`platform_admin.services`. Documents appear as metadata, never their bytes.
"""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apikeys.serializers import (
    PAGINATION_PARAMETERS,
    StrictCharField,
    StrictChoiceField,
    StrictEmailField,
    StrictIntegerField,
    StrictSerializer,
)
from orgs.models import KycStatus, OrgStatus
from orgs.plans import Plan
from platform_admin.models import KycApplicationStatus
from platform_admin.services import FIELD_LIMITS, LIMIT_MAX, REASON_MAX_LENGTH

# ---- output ---------------------------------------------------------------------------------


class KycDocumentSerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    id = serializers.CharField(source="public_id", help_text="Opaque id, `doc_…`.")
    filename = serializers.CharField(help_text="Sanitised original name.")
    content_type = serializers.ChoiceField(
        choices=["application/pdf", "image/png", "image/jpeg"],
        help_text="Detected from the file's content.",
    )
    size = serializers.IntegerField(help_text="Bytes.")
    sha256 = serializers.CharField()
    uploaded_at = serializers.DateTimeField()

    def get_object(self, obj: Any) -> str:
        return "kyc_document"


class KycApplicationSerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    id = serializers.CharField(source="public_id", help_text="Opaque id, `kyc_…`.")
    status = serializers.ChoiceField(choices=KycApplicationStatus.values)
    legal_name = serializers.CharField()
    registration_number = serializers.CharField()
    country = serializers.CharField(help_text="ISO 3166-1 alpha-2.")
    address = serializers.CharField()
    director_name = serializers.CharField()
    rejection_reason = serializers.CharField(help_text="Empty unless rejected.")
    submitted_at = serializers.DateTimeField()
    submitted_by = serializers.CharField(
        source="submitted_by_label", help_text="An email, or the submitting key's display form."
    )
    reviewed_at = serializers.DateTimeField(allow_null=True)
    documents = KycDocumentSerializer(many=True, help_text="Metadata only, never the bytes.")

    def get_object(self, obj: Any) -> str:
        return "kyc_application"


class KycSerializer(serializers.Serializer[Any]):
    """The org's KYC state: its status and its latest application (or null)."""

    object = serializers.SerializerMethodField()
    status = serializers.ChoiceField(choices=KycStatus.values)
    application = KycApplicationSerializer(allow_null=True)

    def get_object(self, obj: Any) -> str:
        return "kyc"


class PlatformOrgRefSerializer(serializers.Serializer[Any]):
    id = serializers.CharField(source="public_id")
    slug = serializers.CharField()
    name = serializers.CharField()


class PlatformKycApplicationSerializer(KycApplicationSerializer):
    organization = PlatformOrgRefSerializer(source="org")
    reviewed_by = serializers.CharField(
        source="reviewed_by_label", help_text="The staff member's email or the system key."
    )


class LimitsSerializer(serializers.Serializer[Any]):
    per_minute = serializers.IntegerField(allow_null=True)
    burst = serializers.IntegerField(allow_null=True)
    monthly = serializers.IntegerField(allow_null=True)


class PlatformOrganizationSerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    id = serializers.CharField(source="public_id", help_text="Opaque id, `org_…`.")
    slug = serializers.CharField()
    name = serializers.CharField()
    plan = serializers.ChoiceField(choices=Plan.values)
    kyc_status = serializers.ChoiceField(choices=KycStatus.values)
    status = serializers.ChoiceField(choices=OrgStatus.values)
    custom_limits = serializers.SerializerMethodField(
        help_text="Overrides set by staff: null means the plan's, 0 unlimited."
    )
    limits = serializers.SerializerMethodField(help_text="Effective limits; 0 means unlimited.")
    member_count = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()

    def get_object(self, obj: Any) -> str:
        return "organization"

    def get_custom_limits(self, obj: Any) -> dict[str, int | None]:
        return {
            "per_minute": obj.custom_per_minute,
            "burst": obj.custom_burst,
            "monthly": obj.custom_monthly,
        }

    def get_limits(self, obj: Any) -> dict[str, int]:
        limits = obj.limits
        return {"per_minute": limits.per_minute, "burst": limits.burst, "monthly": limits.monthly}

    def get_member_count(self, obj: Any) -> int:
        count = getattr(obj, "member_count", None)
        return int(count) if count is not None else int(obj.memberships.count())


# ---- input ----------------------------------------------------------------------------------


class Base64DocumentSerializer(StrictSerializer):
    filename = StrictCharField(max_length=255)
    content_base64 = serializers.CharField(
        trim_whitespace=False, help_text="The file, base64-encoded (standard alphabet)."
    )


class KycSubmitSerializer(StrictSerializer):
    legal_name = StrictCharField(max_length=FIELD_LIMITS["legal_name"])
    registration_number = StrictCharField(max_length=FIELD_LIMITS["registration_number"])
    country = StrictCharField(max_length=2, help_text="ISO 3166-1 alpha-2, e.g. `GB`.")
    address = serializers.CharField(max_length=FIELD_LIMITS["address"])
    director_name = StrictCharField(max_length=FIELD_LIMITS["director_name"])
    documents = Base64DocumentSerializer(
        many=True,
        required=False,
        default=list,
        help_text="JSON: files as base64 (within the 1 MB body limit). Multipart: file "
        "parts named `documents`.",
    )
    keep_documents = serializers.ListField(
        child=StrictCharField(max_length=40),
        required=False,
        default=list,
        max_length=10,
        help_text="Ids (`doc_…`) of documents of the last, rejected application to keep.",
    )


class KycSubmitMultipartSerializer(KycSubmitSerializer):
    """POST kyc as multipart/form-data: the same fields as form parts, the documents as
    file parts. Documents the request body (`platform_admin.api.KycApi` reads the parts)."""

    documents = serializers.ListField(  # type: ignore[assignment]
        child=serializers.FileField(),
        required=False,
        help_text="One file part per document, each named `documents`: PDF, PNG or JPEG "
        "(checked by content); by default 10 MB each and 1 to 5 in all, `keep_documents` included.",
    )


class KycRejectSerializer(StrictSerializer):
    reason = serializers.CharField(max_length=REASON_MAX_LENGTH)


class PlatformKycFilterSerializer(StrictSerializer):
    status = StrictChoiceField(choices=KycApplicationStatus.values, required=False)
    organization = StrictCharField(required=False, max_length=40, help_text="An `org_…` id.")
    also_allowed = PAGINATION_PARAMETERS


class PlatformOrgFilterSerializer(StrictSerializer):
    q = StrictCharField(required=False, max_length=100, help_text="Name, slug or `org_…` id.")
    status = StrictChoiceField(choices=OrgStatus.values, required=False)
    also_allowed = PAGINATION_PARAMETERS


class PlatformOrgCreateSerializer(StrictSerializer):
    name = StrictCharField(max_length=120)
    slug = StrictCharField(max_length=50)
    owner_email = StrictEmailField(
        max_length=254, help_text="The first owner; their account is created if needed."
    )
    plan = StrictChoiceField(choices=Plan.values, default=Plan.STARTER)


class LimitsInputSerializer(StrictSerializer):
    per_minute = StrictIntegerField(
        min_value=0, max_value=LIMIT_MAX, allow_null=True, required=False
    )
    burst = StrictIntegerField(min_value=0, max_value=LIMIT_MAX, allow_null=True, required=False)
    monthly = StrictIntegerField(min_value=0, max_value=LIMIT_MAX, allow_null=True, required=False)


class PlatformOrgUpdateSerializer(StrictSerializer):
    plan = StrictChoiceField(choices=Plan.values, required=False)
    status = StrictChoiceField(
        choices=OrgStatus.values,
        required=False,
        help_text="`suspended` refuses every key of the org at once; `active` lifts it.",
    )
    suspension_reason = StrictCharField(
        required=False, max_length=REASON_MAX_LENGTH, allow_blank=True
    )
    custom_limits = LimitsInputSerializer(
        required=False,
        help_text="Null means the plan's, 0 unlimited; an omitted field keeps its value.",
    )
