"""Platform and KYC API endpoints, included under /api/v1/ by apikeys/api_urls.py."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
