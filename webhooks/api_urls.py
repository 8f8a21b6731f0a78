"""The `webhook-endpoints` API, included from apikeys/api_urls.py under /api/v1/."""

from django.urls import URLPattern, URLResolver, path

import config.converters  # noqa: F401  (registers <pid>)
from webhooks import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("webhook-endpoints", api.WebhookEndpointListApi.as_view(), name="api-webhook-endpoints"),
    path(
        "webhook-endpoints/<pid:endpoint_id>",
        api.WebhookEndpointDetailApi.as_view(),
        name="api-webhook-endpoint",
    ),
    path(
        "webhook-endpoints/<pid:endpoint_id>/enable",
        api.WebhookEndpointEnableApi.as_view(),
        name="api-webhook-endpoint-enable",
    ),
    path(
        "webhook-endpoints/<pid:endpoint_id>/disable",
        api.WebhookEndpointDisableApi.as_view(),
        name="api-webhook-endpoint-disable",
    ),
    path(
        "webhook-endpoints/<pid:endpoint_id>/test",
        api.WebhookEndpointTestApi.as_view(),
        name="api-webhook-endpoint-test",
    ),
    path(
        "webhook-endpoints/<pid:endpoint_id>/deliveries",
        api.WebhookDeliveryListApi.as_view(),
        name="api-webhook-deliveries",
    ),
    path(
        "webhook-endpoints/<pid:endpoint_id>/deliveries/<pid:delivery_id>/resend",
        api.WebhookDeliveryResendApi.as_view(),
        name="api-webhook-delivery-resend",
    ),
]
