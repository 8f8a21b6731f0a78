"""Webhook dashboard URLs, mounted under /o/<org_slug>/ (see config/urls.py)."""

from django.urls import URLPattern, URLResolver, path

import config.converters  # noqa: F401  (registers <pid>)
from webhooks import views

org_urlpatterns: list[URLPattern | URLResolver] = [
    path("webhooks/", views.WebhookListView.as_view(), name="webhook-list"),
    path("webhooks/new/", views.WebhookCreateView.as_view(), name="webhook-create"),
    path("webhooks/<pid:endpoint_id>/", views.WebhookDetailView.as_view(), name="webhook-detail"),
    path("webhooks/<pid:endpoint_id>/test/", views.WebhookTestView.as_view(), name="webhook-test"),
    path(
        "webhooks/<pid:endpoint_id>/enable/",
        views.WebhookEnableView.as_view(),
        name="webhook-enable",
    ),
    path(
        "webhooks/<pid:endpoint_id>/disable/",
        views.WebhookDisableView.as_view(),
        name="webhook-disable",
    ),
    path(
        "webhooks/<pid:endpoint_id>/delete/",
        views.WebhookDeleteView.as_view(),
        name="webhook-delete",
    ),
    path(
        "webhooks/<pid:endpoint_id>/deliveries/<pid:delivery_id>/resend/",
        views.WebhookResendView.as_view(),
        name="webhook-resend",
    ),
]
