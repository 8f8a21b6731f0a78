"""Platform console URLs (/platform/) and the org-side KYC page (under /o/<org_slug>/)."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
org_urlpatterns: list[URLPattern | URLResolver] = []
