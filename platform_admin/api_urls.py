"""Platform and KYC API endpoints, included under /api/v1/ by apikeys/api_urls.py. The
`pid` converter (config/converters.py) admits opaque ids only."""

from django.urls import URLPattern, URLResolver, path

import config.converters  # noqa: F401  (registers <pid>)
from platform_admin import api

urlpatterns: list[URLPattern | URLResolver] = [
    path("kyc", api.KycApi.as_view(), name="api-kyc"),
    path(
        "platform/organizations",
        api.PlatformOrganizationListApi.as_view(),
        name="api-platform-organizations",
    ),
    path(
        "platform/organizations/<pid:org_id>",
        api.PlatformOrganizationDetailApi.as_view(),
        name="api-platform-organization",
    ),
    path(
        "platform/kyc-applications",
        api.PlatformKycListApi.as_view(),
        name="api-platform-kyc-applications",
    ),
    path(
        "platform/kyc-applications/<pid:kyc_id>",
        api.PlatformKycDetailApi.as_view(),
        name="api-platform-kyc-application",
    ),
    path(
        "platform/kyc-applications/<pid:kyc_id>/approve",
        api.PlatformKycApproveApi.as_view(),
        name="api-platform-kyc-approve",
    ),
    path(
        "platform/kyc-applications/<pid:kyc_id>/reject",
        api.PlatformKycRejectApi.as_view(),
        name="api-platform-kyc-reject",
    ),
]
