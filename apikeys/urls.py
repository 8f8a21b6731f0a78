"""API-key and usage dashboard URLs, mounted under /o/<org_slug>/ (see config/urls.py)."""

from django.urls import URLPattern, URLResolver, path

import config.converters  # noqa: F401  (registers <pid>)
from apikeys import views

org_urlpatterns: list[URLPattern | URLResolver] = [
    path("api-keys/", views.ApiKeyListView.as_view(), name="apikey-list"),
    path("api-keys/new/", views.ApiKeyCreateView.as_view(), name="apikey-create"),
    path("api-keys/<pid:key_id>/", views.ApiKeyDetailView.as_view(), name="apikey-detail"),
    path("api-keys/<pid:key_id>/edit/", views.ApiKeyEditView.as_view(), name="apikey-edit"),
    path("api-keys/<pid:key_id>/narrow/", views.ApiKeyNarrowView.as_view(), name="apikey-narrow"),
    path("api-keys/<pid:key_id>/rotate/", views.ApiKeyRotateView.as_view(), name="apikey-rotate"),
    path("api-keys/<pid:key_id>/revoke/", views.ApiKeyRevokeView.as_view(), name="apikey-revoke"),
    path("api-keys/<pid:key_id>/delete/", views.ApiKeyDeleteView.as_view(), name="apikey-delete"),
    path("usage/", views.UsageView.as_view(), name="org-usage"),
]
