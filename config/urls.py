from django.contrib import admin
from django.urls import include, path

import apikeys.urls
import orgs.urls
import platform_admin.urls
from config import views

# Every page of one organisation lives under /o/<org_slug>/ and is served by a view built
# on orgs.tenancy.OrgMixin (a test walks these patterns to prove it).
org_urlpatterns = [
    *orgs.urls.org_urlpatterns,
    *apikeys.urls.org_urlpatterns,
    *platform_admin.urls.org_urlpatterns,
]

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("", include("accounts.urls")),
    path("", include(orgs.urls.urlpatterns)),
    path("o/<slug:org_slug>/", include(org_urlpatterns)),
    path("platform/", include(platform_admin.urls.urlpatterns)),
    path("api/v1/", include("apikeys.api_urls")),
    path("admin/", admin.site.urls),
]
