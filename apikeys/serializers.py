"""Request and response shapes of the API. Validation of types only: business rules live in
the services, which the views call.

Input is strict (ADR 0041): strings must be JSON strings, integers JSON integers, and a
body field that the endpoint does not know is a 400 `validation_error`, so a typo never
silently does nothing. Output carries opaque ids only (`org_…`, `mem_…`, `key_…`,
`inv_…`, `evt_…`).
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, ClassVar

from django.http import QueryDict
from django.utils import timezone
from drf_spectacular.utils import extend_schema_field
from rest_framework import serializers

from apikeys.models import IpMode, KeyStatus
from apikeys.networks import MAX_RANGE_LENGTH, MAX_RANGES
from apikeys.services import MAX_GRACE, NAME_MAX_LENGTH
from config import dates
from orgs.models import InvitationStatus, KycStatus, LeakResponse, OrgStatus, Role
from orgs.plans import Plan

DEFAULT_GRACE_SECONDS = 24 * 60 * 60
MAX_GRACE_SECONDS = int(MAX_GRACE.total_seconds())
MAX_SCOPES = 64
PAGINATION_PARAMETERS = frozenset({"cursor", "limit"})


def _no_control_characters(value: str) -> None:
    if any(ord(ch) < 32 or ord(ch) == 127 for ch in value):
        raise serializers.ValidationError("Control characters are not allowed.", code="invalid")


class StrictCharField(serializers.CharField):
    """A JSON string only (no number coerced to text), without control characters.

    DRF's CharField already refuses NUL and lone surrogates.
    """

    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        value = super().to_internal_value(data)
        _no_control_characters(value)
        return value


class StrictEmailField(serializers.EmailField):
    def to_internal_value(self, data: Any) -> str:
        if not isinstance(data, str):
            self.fail("invalid")
        value: str = super().to_internal_value(data)
        _no_control_characters(value)
        return value


class StrictChoiceField(serializers.ChoiceField):
    def to_internal_value(self, data: Any) -> Any:
        if not isinstance(data, str):
            self.fail("invalid_choice", input=str(data)[:50])
        return super().to_internal_value(data)


class StrictIntegerField(serializers.IntegerField):
    """A JSON integer only: no strings, floats or booleans."""

    def to_internal_value(self, data: Any) -> int:
        if isinstance(data, bool) or not isinstance(data, int):
            self.fail("invalid")
        return int(super().to_internal_value(data))


class StrictDateTimeField(serializers.DateTimeField):
    """ISO 8601; naive values are UTC; values that cannot be expressed in UTC are refused."""

    def to_internal_value(self, value: Any) -> datetime:
        if not isinstance(value, str):
            self.fail("invalid", format="ISO 8601")
        # Python's parser ignores what follows a NUL byte: "…Z\x00junk" would pass.
        _no_control_characters(value)
        parsed: datetime = super().to_internal_value(value)
        try:
            return parsed.astimezone(UTC)
        except (OverflowError, ValueError):
            self.fail("invalid", format="ISO 8601")
        raise AssertionError("unreachable")  # pragma: no cover


class FilterDateTimeField(StrictDateTimeField):
    """A datetime a query filters on: also within `config.dates`' range, so that year 1
    or 9999 is a 400 naming the parameter and no arithmetic on the value can overflow."""

    def to_internal_value(self, value: Any) -> datetime:
        if isinstance(value, str) and len(value) > dates.MAX_LENGTH:
            self.fail("invalid", format="ISO 8601")
        moment = super().to_internal_value(value)
        if not dates.datetime_in_range(moment):
            raise serializers.ValidationError(dates.RANGE_MESSAGE, code="out_of_range")
        return moment


class NamedEnumField(serializers.ChoiceField):
    """A choice field documented as the enum component `enum_name` wherever it appears
    (`apikeys.schema.NamedEnumFieldExtension`), for choice sets whose field name other
    sets share (`status`)."""

    def __init__(self, *, enum_name: str, choices: Any, **kwargs: Any) -> None:
        self.enum_name = enum_name
        super().__init__(choices=choices, **kwargs)


def key_status_field(**kwargs: Any) -> NamedEnumField:
    """`KeyStatus` as the OpenAPI enum `ApiKeyStatusEnum`."""
    return NamedEnumField(enum_name="ApiKeyStatusEnum", choices=KeyStatus.values, **kwargs)


class StrictSerializer(serializers.Serializer[Any]):
    """Refuses fields it does not declare (ADR 0041)."""

    # Names accepted without being fields (the paginator's query parameters).
    also_allowed: ClassVar[frozenset[str]] = frozenset()

    def to_internal_value(self, data: Any) -> Any:
        if isinstance(data, dict):
            unknown = sorted(set(data) - set(self.fields) - self.also_allowed)
            if unknown:
                raise serializers.ValidationError(
                    {name[:64]: ["Unknown field."] for name in unknown[:10]}, code="unknown_field"
                )
        if isinstance(data, QueryDict):
            # DRF treats `?actor=` as absent; a filter given empty is a mistake worth naming.
            blank = [
                name
                for name, field in self.fields.items()
                if data.get(name) == "" and not getattr(field, "allow_blank", False)
            ]
            if blank:
                raise serializers.ValidationError(
                    {name: ["This parameter may not be blank."] for name in blank}, code="blank"
                )
        return super().to_internal_value(data)


# ---- output ---------------------------------------------------------------------------------


class RateLimitsSerializer(serializers.Serializer[Any]):
    per_minute = serializers.IntegerField(help_text="Requests per minute per key; 0: unlimited.")
    burst = serializers.IntegerField(help_text="Requests per second per key; 0: unlimited.")
    monthly = serializers.IntegerField(help_text="Requests per month for the org; 0: unlimited.")


class OrganizationSerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    id = serializers.CharField(source="public_id", help_text="Opaque id, `org_…`.")
    slug = serializers.CharField()
    name = serializers.CharField()
    plan = serializers.ChoiceField(choices=Plan.values)
    kyc_status = serializers.ChoiceField(choices=KycStatus.values)
    status = serializers.ChoiceField(choices=OrgStatus.values)
    require_two_factor = serializers.BooleanField()
    leak_response = serializers.ChoiceField(
        choices=LeakResponse.values,
        help_text="What a leak report does to a key: `revoke` it, or `flag` it as leaked "
        "and leave it working. Set by an owner in the dashboard.",
    )
    created_at = serializers.DateTimeField()

    def get_object(self, obj: Any) -> str:
        return "organization"


ALLOWED_IPS_HELP = (
    "CIDR ranges (IPv4 and IPv6; a single address is its own range) the key may be used "
    "from, at most 50; empty: anywhere."
)
ALLOWED_IPS_MODE_HELP = (
    "`enforce`: a request from elsewhere is refused with 403 `ip_not_allowed`. `report`: it "
    "is admitted and recorded in the key's usage and the audit log."
)

META_HELP = (
    "The operator's own facts about the key (tenant ids, plan names): a JSON object of "
    "at most 2 KB as compact JSON."
)


class ScopeResourceSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    # DRF moves declared fields off the class; the name only shadows Field.label for mypy.
    label = serializers.CharField()  # type: ignore[assignment]
    description = serializers.CharField()
    actions = serializers.ListField(child=serializers.CharField())
    implies = serializers.DictField(
        child=serializers.ListField(child=serializers.CharField()),
        help_text="Action → the actions it also grants (transitively).",
    )
    scopes = serializers.ListField(
        child=serializers.CharField(), help_text="`<resource>:<action>` for every action."
    )


class ScopePresetSerializer(serializers.Serializer[Any]):
    name = serializers.CharField()
    label = serializers.CharField()  # type: ignore[assignment]
    description = serializers.CharField()
    scopes = serializers.ListField(
        child=serializers.CharField(), help_text="The concrete scopes the preset grants."
    )


class ScopeCatalogueSerializer(serializers.Serializer[Any]):
    object = serializers.ChoiceField(choices=["scope_catalogue"])
    actions = serializers.ListField(
        child=serializers.CharField(), help_text="Every action some resource has."
    )
    resources = ScopeResourceSerializer(many=True)
    presets = ScopePresetSerializer(many=True)


class MeKeySerializer(serializers.Serializer[Any]):
    id = serializers.CharField(help_text="Opaque id, `key_…`.")
    name = serializers.CharField()
    environment = serializers.ChoiceField(choices=["live", "test", "sys"])
    scopes = serializers.ListField(child=serializers.CharField())
    display = serializers.CharField(help_text="Masked form of the key; never the secret.")
    expires_at = serializers.DateTimeField(allow_null=True)
    meta = serializers.DictField(help_text=META_HELP)
    leaked = serializers.BooleanField(
        help_text='Reported leaked and kept working under the organisation\'s "flag only" '
        "setting: rotate it."
    )


class MeOrganizationSerializer(serializers.Serializer[Any]):
    id = serializers.CharField(help_text="Opaque id, `org_…`.")
    slug = serializers.CharField()
    name = serializers.CharField()
    plan = serializers.ChoiceField(choices=Plan.values)
    kyc_status = serializers.ChoiceField(choices=KycStatus.values)
    status = serializers.ChoiceField(choices=OrgStatus.values)


class MeSerializer(serializers.Serializer[Any]):
    """`GET me`; `apikeys.api.me_body` builds it (this class documents it)."""

    object = serializers.SerializerMethodField()
    key = MeKeySerializer()
    organization = MeOrganizationSerializer(allow_null=True, help_text="Null for system keys.")
    rate_limits = RateLimitsSerializer(allow_null=True, help_text="Null for system keys.")

    def get_object(self, obj: Any) -> str:
        return "me"


class MemberSerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    id = serializers.CharField(source="public_id", help_text="Opaque id, `mem_…`.")
    email = serializers.EmailField(source="user.email")
    name = serializers.CharField(source="user.full_name")
    role = serializers.ChoiceField(choices=Role.values)
    two_factor = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField(help_text="When the member joined.")

    def get_object(self, obj: Any) -> str:
        return "member"

    def get_two_factor(self, obj: Any) -> bool | None:
        """Whether the member has a second factor (null when not computed)."""
        value = getattr(obj, "has_two_factor", None)
        return None if value is None else bool(value)


class InvitationSerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    id = serializers.CharField(source="public_id", help_text="Opaque id, `inv_…`.")
    email = serializers.EmailField()
    role = serializers.ChoiceField(choices=Role.values)
    status = serializers.ChoiceField(choices=InvitationStatus.values)
    created_at = serializers.DateTimeField()
    expires_at = serializers.DateTimeField()

    def get_object(self, obj: Any) -> str:
        return "invitation"


class ApiKeySerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    id = serializers.CharField(source="public_id", help_text="Opaque id, `key_…`.")
    name = serializers.CharField()
    environment = serializers.ChoiceField(choices=["live", "test"])
    scopes = serializers.ListField(child=serializers.CharField())
    display = serializers.CharField(help_text="Masked form of the key; never the secret.")
    status = serializers.SerializerMethodField()
    created_at = serializers.DateTimeField()
    created_by = serializers.SerializerMethodField()
    expires_at = serializers.DateTimeField(allow_null=True)
    rotated_at = serializers.DateTimeField(allow_null=True)
    revoked_at = serializers.DateTimeField(allow_null=True)
    last_used_at = serializers.DateTimeField(allow_null=True)
    predecessor_id = serializers.SerializerMethodField()
    rotated_to = serializers.SerializerMethodField()
    meta = serializers.DictField(help_text=META_HELP)
    allowed_ips = serializers.ListField(child=serializers.CharField(), help_text=ALLOWED_IPS_HELP)
    allowed_ips_mode = serializers.ChoiceField(
        choices=IpMode.values, help_text=ALLOWED_IPS_MODE_HELP
    )
    leaked_at = serializers.DateTimeField(
        allow_null=True, help_text="When the key was first reported leaked, or null."
    )

    def get_object(self, obj: Any) -> str:
        return "api_key"

    @extend_schema_field(key_status_field())
    def get_status(self, obj: Any) -> str:
        """`active`, `expiring` (rotated, in its grace period), `leaked` (reported leaked,
        flagged and still working), `expired` or `revoked`."""
        return str(obj.status_at(timezone.now()))

    def get_created_by(self, obj: Any) -> str | None:
        """The creator's email, or the creating key's id (`key_…`), or null."""
        if obj.created_by_id is not None and obj.created_by is not None:
            return str(obj.created_by.email)
        if obj.created_by_key_id is not None and obj.created_by_key is not None:
            return str(obj.created_by_key.public_id)
        return None

    def get_predecessor_id(self, obj: Any) -> str | None:
        """The key this one replaced in a rotation (`key_…`), or null."""
        predecessor = obj.predecessor if obj.predecessor_id is not None else None
        return None if predecessor is None else str(predecessor.public_id)

    def get_rotated_to(self, obj: Any) -> str | None:
        """The key that replaced this one in a rotation (`key_…`), or null."""
        if obj.rotated_at is None:
            return None
        successors = sorted(obj.successors.all(), key=lambda k: (k.created_at, k.pk))
        return str(successors[0].public_id) if successors else None


class ApiKeyWithSecretSerializer(ApiKeySerializer):
    secret = serializers.SerializerMethodField()

    def get_secret(self, obj: Any) -> str:
        """The key itself. Shown in this response only: store it now."""
        return str(self.context["secret"])


class AuditActorSerializer(serializers.Serializer[Any]):
    type = serializers.ChoiceField(choices=["user", "api_key", "system"], source="actor_type")
    id = serializers.CharField(
        source="actor_id", help_text="The acting key's id (`key_…`) when a key acted."
    )
    # DRF moves declared fields off the class; the name only shadows Field.label for mypy.
    label = serializers.CharField(source="actor_label")  # type: ignore[assignment]
    external_id = serializers.CharField(
        source="external_actor_id", help_text="X-Actor-Id sent with the request, if any."
    )


# The audit log stores a target's Django model name (`apikey`); the API names the target
# as the `object` of its resource (`api_key`), the vocabulary of `object` and
# `actor.type` (ADR 0080). A type not listed here is shown as stored.
TARGET_TYPES: dict[str, str] = {
    "apikey": "api_key",
    "kycapplication": "kyc_application",
    "kycdocument": "kyc_document",
    "membership": "member",
}


def target_type(stored: str) -> str:
    """The API's word for an audit event's stored `target_type`."""
    return TARGET_TYPES.get(stored, stored)


class AuditTargetSerializer(serializers.Serializer[Any]):
    type = serializers.SerializerMethodField()
    id = serializers.CharField(source="target_id")
    label = serializers.CharField(source="target_label")  # type: ignore[assignment]

    def get_type(self, obj: Any) -> str:
        """What the target is, as the `object` of its resource: `api_key`, `member`,
        `invitation`, `organization`, `kyc_application`, `kyc_document`, `user`,
        `passkey` (more may appear); empty when the event has no target."""
        return target_type(obj.target_type)


class AuditEventSerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    id = serializers.CharField(source="public_id", help_text="Opaque id, `evt_…`.")
    action = serializers.CharField()
    actor = AuditActorSerializer(source="*")
    target = AuditTargetSerializer(source="*")
    ip = serializers.IPAddressField(allow_null=True)
    user_agent = serializers.CharField()
    request_id = serializers.CharField()
    details = serializers.DictField()
    created_at = serializers.DateTimeField()

    def get_object(self, obj: Any) -> str:
        return "audit_event"


class OkSerializer(serializers.Serializer[Any]):
    ok = serializers.BooleanField()


# ---- input ----------------------------------------------------------------------------------


class OrganizationUpdateSerializer(StrictSerializer):
    name = StrictCharField(max_length=120)


class MemberInviteSerializer(StrictSerializer):
    email = StrictEmailField(max_length=254)
    role = StrictChoiceField(choices=Role.values, default=Role.MEMBER)


class MemberUpdateSerializer(StrictSerializer):
    role = StrictChoiceField(choices=Role.values)


class ApiKeyCreateSerializer(StrictSerializer):
    name = StrictCharField(max_length=NAME_MAX_LENGTH)
    environment = StrictChoiceField(choices=["live", "test"], default="test")
    scopes = serializers.ListField(
        child=StrictCharField(max_length=80),
        max_length=MAX_SCOPES,
        help_text="`<resource>:<action>` scopes of `GET /api/v1/scopes`, or "
        "`<resource>:*` for every action; an action grants what it implies (write implies "
        "read).",
    )
    expires_at = StrictDateTimeField(
        required=False, allow_null=True, default=None, help_text="ISO 8601; null: never."
    )
    meta = serializers.DictField(required=False, default=dict, help_text=META_HELP)
    allowed_ips = serializers.ListField(
        child=StrictCharField(max_length=MAX_RANGE_LENGTH),
        max_length=MAX_RANGES,
        required=False,
        default=list,
        help_text=ALLOWED_IPS_HELP,
    )
    allowed_ips_mode = StrictChoiceField(
        choices=IpMode.values, default=IpMode.ENFORCE, help_text=ALLOWED_IPS_MODE_HELP
    )


class ApiKeyUpdateSerializer(StrictSerializer):
    """Fields left out stay as they are."""

    scopes = serializers.ListField(
        child=StrictCharField(max_length=80),
        max_length=MAX_SCOPES,
        required=False,
        help_text="The key's new scopes, replacing the old ones: only scopes the calling "
        "key holds itself.",
    )
    allowed_ips = serializers.ListField(
        child=StrictCharField(max_length=MAX_RANGE_LENGTH),
        max_length=MAX_RANGES,
        required=False,
        help_text=ALLOWED_IPS_HELP,
    )
    allowed_ips_mode = StrictChoiceField(
        choices=IpMode.values, required=False, help_text=ALLOWED_IPS_MODE_HELP
    )


class ApiKeyRotateSerializer(StrictSerializer):
    grace_period = StrictIntegerField(
        min_value=0,
        max_value=MAX_GRACE_SECONDS,
        default=DEFAULT_GRACE_SECONDS,
        help_text="Seconds the old key keeps working (default 86400, at most 604800).",
    )


class EmptySerializer(StrictSerializer):
    """A body with no fields (or none at all)."""


class AuditEventFilterSerializer(StrictSerializer):
    action = StrictCharField(
        required=False, max_length=64, help_text="Exact action, e.g. `api_key.created`."
    )
    actor = StrictCharField(
        required=False,
        max_length=254,
        help_text="A key id (`key_…`), a user's email, or an X-Actor-Id value.",
    )
    since = FilterDateTimeField(required=False, help_text="ISO 8601; events at or after.")
    until = FilterDateTimeField(required=False, help_text="ISO 8601; events before.")
    also_allowed = PAGINATION_PARAMETERS

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        since, until = attrs.get("since"), attrs.get("until")
        if since is not None and until is not None and since > until:
            raise serializers.ValidationError({"until": ["'until' is before 'since'."]})
        return attrs


class SignInLinkCreateSerializer(StrictSerializer):
    email = serializers.EmailField(max_length=254, help_text="An existing member's email.")
    ttl_minutes = serializers.IntegerField(
        min_value=1,
        max_value=24 * 60,
        required=False,
        help_text="The link's lifetime, capped at the deployment's MAGIC_LINK_MAX_AGE.",
    )
    next = StrictCharField(
        max_length=2000,
        required=False,
        allow_blank=True,
        help_text="A same-site path to land on after signing in; anything else is ignored.",
    )


class SignInLinkSerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    url = serializers.CharField(help_text="The single-use link. Shown once: hand it over now.")
    expires_at = serializers.DateTimeField()

    def get_object(self, obj: Any) -> str:
        return "sign_in_link"


class PageSerializer(StrictSerializer):
    """The query parameters of a plain list: only the paginator's."""

    also_allowed = PAGINATION_PARAMETERS


class ApiKeyListQuerySerializer(StrictSerializer):
    """The filters of `GET api-keys` (and the paginator's parameters)."""

    also_allowed = PAGINATION_PARAMETERS

    status = key_status_field(required=False, help_text="Only keys in this state now.")
    environment = serializers.ChoiceField(
        choices=["live", "test"], required=False, help_text="Only keys of this environment."
    )


# ---- verify API -----------------------------------------------------------------------------


class VerifyRequestSerializer(StrictSerializer):
    key = StrictCharField(max_length=512, help_text="The key a caller of your service sent.")
    scopes = serializers.ListField(
        child=StrictCharField(max_length=80),
        max_length=MAX_SCOPES,
        required=False,
        help_text="Scopes the request needs (`payments:write`); all must be held.",
    )
    method = StrictCharField(
        max_length=16, required=False, help_text="With `path`: the route table decides."
    )
    path = StrictCharField(max_length=4096, required=False)
    ip = serializers.IPAddressField(
        required=False,
        help_text="The address the key's request came from (IPv4 or IPv6). Checked against "
        "the key's IP allowlist and recorded in its usage; a key with an allowlist is "
        "refused (`ip_not_allowed`) without it.",
    )

    def validate(self, attrs: dict[str, Any]) -> dict[str, Any]:
        if ("method" in attrs) != ("path" in attrs):
            raise serializers.ValidationError(
                {"path" if "method" in attrs else "method": ["Send method and path together."]}
            )
        if "scopes" in attrs and "path" in attrs:
            raise serializers.ValidationError(
                {"scopes": ["Send scopes, or method and path, not both."]}
            )
        if "path" in attrs and not attrs["path"].startswith("/"):
            raise serializers.ValidationError({"path": ["A path starts with '/'."]})
        return attrs


class VerifyRateLimitSerializer(serializers.Serializer[Any]):
    limit = serializers.IntegerField(help_text="Requests per minute; 0 = unlimited.")
    remaining = serializers.IntegerField()
    reset = serializers.IntegerField(help_text="UTC epoch seconds when the minute ends.")


class VerifyKeySerializer(serializers.Serializer[Any]):
    id = serializers.CharField()
    name = serializers.CharField()
    environment = serializers.ChoiceField(choices=["live", "test"])
    display = serializers.CharField()
    expires_at = serializers.DateTimeField(allow_null=True)
    leaked = serializers.BooleanField(
        help_text='Reported leaked and kept working under the organisation\'s "flag only" '
        "setting: rotate it."
    )


class VerifyResultSerializer(serializers.Serializer[Any]):
    valid = serializers.BooleanField()
    code = serializers.CharField(
        allow_null=True, help_text="Why the key is refused: the API's error code; null if valid."
    )
    key = VerifyKeySerializer(allow_null=True)
    organization = MeOrganizationSerializer(allow_null=True, help_text="As in `me`.")
    scopes = serializers.ListField(child=serializers.CharField())
    meta = serializers.DictField()
    rate_limit = VerifyRateLimitSerializer(allow_null=True)
