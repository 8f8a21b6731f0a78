from django.contrib import admin
from django.urls import include, path, re_path
from drf_spectacular.views import SpectacularAPIView, SpectacularSwaggerSplitView

import apikeys.urls
import config.converters  # noqa: F401  (registers <orgslug>)
import orgs.urls
import platform_admin.urls
import webhooks.urls
from apikeys import views as apikeys_views
from apikeys.api import NotFoundApi
from apikeys.gateway import GatewayAuthApi
from config import views

# Every page of one organisation lives under /o/<org_slug>/ and is served by a view built
# on orgs.tenancy.OrgMixin (a test walks these patterns to prove it).
org_urlpatterns = [
    *orgs.urls.org_urlpatterns,
    *apikeys.urls.org_urlpatterns,
    *platform_admin.urls.org_urlpatterns,
    *webhooks.urls.org_urlpatterns,
]

urlpatterns = [
    path("", views.home, name="home"),
    path("healthz", views.healthz, name="healthz"),
    path("", include("accounts.urls")),
    path("", include(orgs.urls.urlpatterns)),
    path("o/<orgslug:org_slug>/", include(org_urlpatterns)),
    path("platform/", include(platform_admin.urls.urlpatterns)),
    path("api/v1/", include("apikeys.api_urls")),
    # The gateway door (forward-auth): any method, the original path after /gateway/auth.
    re_path(r"^gateway/auth(?P<rest>/.*)?$", GatewayAuthApi.as_view(), name="gateway-auth"),
    path("api/schema/", SpectacularAPIView.as_view(), name="api-schema"),
    path(
        "api/docs/",
        SpectacularSwaggerSplitView.as_view(
            url_name="api-schema", template_name="apikeys/api_docs.html"
        ),
        name="api-docs",
    ),
    path("api/docs/errors/", apikeys_views.api_errors_page, name="api-errors"),
    path("admin/", admin.site.urls),
    # Anything else under /api/ or /gateway/ is the API's 404, whatever DEBUG says (Django's
    # debug page would answer HTML to an API client).
    re_path(r"^(?:api|gateway)(?:/.*)?$", NotFoundApi.as_view(), name="api-elsewhere-not-found"),
]

# Under /api/ Django-level errors use the API's error shape; elsewhere Django's pages.
handler400 = "apikeys.exceptions.handler400"
handler404 = "apikeys.exceptions.handler404"
handler500 = "apikeys.exceptions.handler500"
