"""API-key dashboard URLs, mounted under /o/<org_slug>/ (see config/urls.py)."""

from django.urls import URLPattern, URLResolver

org_urlpatterns: list[URLPattern | URLResolver] = []
