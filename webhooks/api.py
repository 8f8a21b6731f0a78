"""The `webhook-endpoints` API (docs/webhooks.md): scope `webhooks`, read to list and get, write
for every change. The signing secret appears in the create response only."""

from __future__ import annotations

from drf_spectacular.utils import extend_schema
from rest_framework import status
from rest_framework.request import Request
from rest_framework.response import Response

from apikeys.api_base import OrgApiView, validated
from apikeys.serializers import EmptySerializer
from webhooks import serializers as s
from webhooks.models import WebhookEndpoint
from webhooks.selectors import (
    delivery_by_pk,
    delivery_get,
    delivery_list,
    endpoint_get,
    endpoint_list,
)
from webhooks.services import (
    delivery_resend,
    endpoint_create,
    endpoint_delete,
    endpoint_disable,
    endpoint_enable,
    endpoint_send_test,
    endpoint_update,
)

TAGS = ["webhooks"]


class WebhookBase(OrgApiView):
    resource = "webhooks"

    def endpoint(self, endpoint_id: str) -> WebhookEndpoint:
        return endpoint_get(org=self.org, public_id=endpoint_id)

    def shown(self, endpoint: WebhookEndpoint) -> Response:
        return Response(s.WebhookEndpointSerializer(endpoint).data)


class WebhookEndpointListApi(WebhookBase):
    """The organisation's webhook endpoints; POST adds one."""

    @extend_schema(
        responses=s.WebhookEndpointSerializer(many=True),
        summary="List webhook endpoints",
        tags=TAGS,
    )
    def get(self, request: Request) -> Response:
        return self.paginate(endpoint_list(org=self.org), s.WebhookEndpointSerializer)

    @extend_schema(
        request=s.WebhookEndpointCreateSerializer,
        responses={201: s.WebhookEndpointWithSecretSerializer},
        summary="Create a webhook endpoint",
        tags=TAGS,
    )
    def post(self, request: Request) -> Response:
        """Returns the signing secret once, in this response. The URL must be http or
        https and resolve to public addresses."""
        data = validated(s.WebhookEndpointCreateSerializer, request.data)
        endpoint, secret = endpoint_create(
            org=self.org,
            url=data["url"],
            description=data["description"],
            events=data["events"],
            actor=self.actor,
            request=request._request,
        )
        body = s.WebhookEndpointWithSecretSerializer(endpoint, context={"secret": secret}).data
        return Response(body, status=status.HTTP_201_CREATED)


class WebhookEndpointDetailApi(WebhookBase):
    """One endpoint (never its secret); PATCH changes it, DELETE removes it."""

    @extend_schema(
        responses=s.WebhookEndpointSerializer, summary="Get a webhook endpoint", tags=TAGS
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        return self.shown(self.endpoint(endpoint_id))

    @extend_schema(
        request=s.WebhookEndpointUpdateSerializer,
        responses=s.WebhookEndpointSerializer,
        summary="Update a webhook endpoint",
        tags=TAGS,
    )
    def patch(self, request: Request, endpoint_id: str) -> Response:
        endpoint = self.endpoint(endpoint_id)
        data = validated(s.WebhookEndpointUpdateSerializer, request.data)
        endpoint_update(
            endpoint=endpoint,
            url=data.get("url"),
            description=data.get("description"),
            events=data.get("events"),
            actor=self.actor,
            request=request._request,
        )
        return self.shown(endpoint)

    @extend_schema(responses={204: None}, summary="Delete a webhook endpoint", tags=TAGS)
    def delete(self, request: Request, endpoint_id: str) -> Response:
        endpoint_delete(
            endpoint=self.endpoint(endpoint_id), actor=self.actor, request=request._request
        )
        return Response(status=status.HTTP_204_NO_CONTENT)


class WebhookEndpointEnableApi(WebhookBase):
    """Send to the endpoint again."""

    @extend_schema(
        request=EmptySerializer,
        responses=s.WebhookEndpointSerializer,
        summary="Enable a webhook endpoint",
        tags=TAGS,
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = self.endpoint(endpoint_id)
        validated(EmptySerializer, request.data)
        endpoint_enable(endpoint=endpoint, actor=self.actor, request=request._request)
        return self.shown(endpoint)


class WebhookEndpointDisableApi(WebhookBase):
    """Stop sending to the endpoint."""

    @extend_schema(
        request=EmptySerializer,
        responses=s.WebhookEndpointSerializer,
        summary="Disable a webhook endpoint",
        tags=TAGS,
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = self.endpoint(endpoint_id)
        validated(EmptySerializer, request.data)
        endpoint_disable(endpoint=endpoint, actor=self.actor, request=request._request)
        return self.shown(endpoint)


class WebhookEndpointTestApi(WebhookBase):
    """Send a `webhook.test` event to the endpoint now."""

    @extend_schema(
        request=EmptySerializer,
        responses={202: s.WebhookDeliverySerializer},
        summary="Send a test event",
        tags=TAGS,
    )
    def post(self, request: Request, endpoint_id: str) -> Response:
        endpoint = self.endpoint(endpoint_id)
        validated(EmptySerializer, request.data)
        delivery = endpoint_send_test(endpoint=endpoint, actor=self.actor, request=request._request)
        return _delivery_response(delivery.pk)


class WebhookDeliveryListApi(WebhookBase):
    """The endpoint's deliveries, newest first, each with its attempts."""

    @extend_schema(
        responses=s.WebhookDeliverySerializer(many=True),
        summary="List an endpoint's deliveries",
        tags=TAGS,
    )
    def get(self, request: Request, endpoint_id: str) -> Response:
        deliveries = delivery_list(endpoint=self.endpoint(endpoint_id))
        return self.paginate(deliveries, s.WebhookDeliverySerializer)


class WebhookDeliveryResendApi(WebhookBase):
    """Send a delivery again now, once."""

    @extend_schema(
        request=EmptySerializer,
        responses={202: s.WebhookDeliverySerializer},
        summary="Resend a delivery",
        tags=TAGS,
    )
    def post(self, request: Request, endpoint_id: str, delivery_id: str) -> Response:
        delivery = delivery_get(endpoint=self.endpoint(endpoint_id), public_id=delivery_id)
        validated(EmptySerializer, request.data)
        delivery_resend(delivery=delivery, actor=self.actor, request=request._request)
        return _delivery_response(delivery.pk)


def _delivery_response(pk: int) -> Response:
    # Read again: with eager tasks the attempt may already be made and logged.
    delivery = delivery_by_pk(pk=pk)
    return Response(s.WebhookDeliverySerializer(delivery).data, status=status.HTTP_202_ACCEPTED)
