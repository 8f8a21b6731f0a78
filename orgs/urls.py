"""Org URLs. `org_urlpatterns` are mounted under /o/<org_slug>/ (see config/urls.py)."""

from django.urls import URLPattern, URLResolver

urlpatterns: list[URLPattern | URLResolver] = []
org_urlpatterns: list[URLPattern | URLResolver] = []
