"""Request and response shapes of the `webhook-endpoints` API (strict input, ADR 0041)."""

from __future__ import annotations

from typing import Any

from rest_framework import serializers

from apikeys.serializers import StrictCharField, StrictChoiceField, StrictSerializer
from webhooks.events import EVENT_TYPES
from webhooks.models import DeliveryStatus, DisabledReason
from webhooks.services import DESCRIPTION_MAX_LENGTH, URL_MAX_LENGTH

EVENTS_HELP = "Event types to receive (docs/webhooks.md); empty: every event."


class WebhookEndpointSerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    id = serializers.CharField(source="public_id", help_text="Opaque id, `whe_…`.")
    url = serializers.CharField()
    description = serializers.CharField()
    events = serializers.ListField(
        child=serializers.ChoiceField(choices=list(EVENT_TYPES)), help_text=EVENTS_HELP
    )
    enabled = serializers.BooleanField()
    disabled_reason = serializers.ChoiceField(
        choices=DisabledReason.values,
        help_text="Empty while enabled; `manual` or `failing` (3 days of failures).",
    )
    failing_since = serializers.DateTimeField(allow_null=True)
    created_at = serializers.DateTimeField()

    def get_object(self, obj: Any) -> str:
        return "webhook_endpoint"


class WebhookEndpointWithSecretSerializer(WebhookEndpointSerializer):
    secret = serializers.SerializerMethodField()

    def get_secret(self, obj: Any) -> str:
        """The signing secret (`whsec_…`). Shown in this response only: store it now."""
        return str(self.context["secret"])


class WebhookEndpointCreateSerializer(StrictSerializer):
    url = StrictCharField(max_length=URL_MAX_LENGTH, help_text="An http or https URL.")
    description = StrictCharField(
        max_length=DESCRIPTION_MAX_LENGTH, required=False, default="", allow_blank=True
    )
    events = serializers.ListField(
        child=StrictChoiceField(choices=list(EVENT_TYPES)),
        required=False,
        default=list,
        max_length=len(EVENT_TYPES),
        help_text=EVENTS_HELP,
    )


class WebhookEndpointUpdateSerializer(StrictSerializer):
    url = StrictCharField(max_length=URL_MAX_LENGTH, required=False)
    description = StrictCharField(
        max_length=DESCRIPTION_MAX_LENGTH, required=False, allow_blank=True
    )
    events = serializers.ListField(
        child=StrictChoiceField(choices=list(EVENT_TYPES)),
        required=False,
        max_length=len(EVENT_TYPES),
        help_text=EVENTS_HELP,
    )


class WebhookAttemptSerializer(serializers.Serializer[Any]):
    at = serializers.DateTimeField()
    status_code = serializers.IntegerField(allow_null=True)
    error = serializers.CharField(help_text="Why no answer came (timeout, refused, ...).")
    duration_ms = serializers.IntegerField()
    response_excerpt = serializers.CharField(help_text="The answer's first 500 characters.")
    resend = serializers.BooleanField()


class WebhookDeliverySerializer(serializers.Serializer[Any]):
    object = serializers.SerializerMethodField()
    id = serializers.CharField(source="public_id", help_text="Opaque id, `whd_…`.")
    endpoint_id = serializers.CharField(source="endpoint.public_id")
    event_id = serializers.CharField(help_text="The `webhook-id` header, `msg_…`.")
    event_type = serializers.ChoiceField(choices=list(EVENT_TYPES))
    payload = serializers.DictField(help_text="The JSON body sent.")
    status = serializers.ChoiceField(choices=DeliveryStatus.values)
    attempts = serializers.IntegerField()
    next_attempt_at = serializers.DateTimeField(allow_null=True)
    last_status_code = serializers.IntegerField(allow_null=True)
    last_duration_ms = serializers.IntegerField(allow_null=True)
    last_response = serializers.CharField()
    created_at = serializers.DateTimeField()
    log = WebhookAttemptSerializer(many=True, help_text="Attempts, newest first.")

    def get_object(self, obj: Any) -> str:
        return "webhook_delivery"
