"""Platform console URLs (/platform/) and the org-side KYC page (under /o/<org_slug>/)."""

from django.urls import URLPattern, URLResolver, path

import config.converters  # noqa: F401  (registers <pid>)
from platform_admin import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.DashboardView.as_view(), name="platform_dashboard"),
    path("kyc/", views.KycQueueView.as_view(), name="platform_kyc_queue"),
    path("kyc/<pid:kyc_id>/", views.KycDetailView.as_view(), name="platform_kyc_detail"),
    path("kyc/<pid:kyc_id>/approve/", views.KycApproveView.as_view(), name="platform_kyc_approve"),
    path("kyc/<pid:kyc_id>/reject/", views.KycRejectView.as_view(), name="platform_kyc_reject"),
    path(
        "kyc/<pid:kyc_id>/documents/<pid:doc_id>/",
        views.StaffDocumentDownloadView.as_view(),
        name="platform_kyc_document",
    ),
    path("organizations/", views.OrgListView.as_view(), name="platform_org_list"),
    path("organizations/<pid:org_id>/", views.OrgDetailView.as_view(), name="platform_org_detail"),
    path("organizations/<pid:org_id>/plan/", views.OrgPlanView.as_view(), name="platform_org_plan"),
    path(
        "organizations/<pid:org_id>/limits/",
        views.OrgLimitsView.as_view(),
        name="platform_org_limits",
    ),
    path(
        "organizations/<pid:org_id>/suspend/",
        views.OrgSuspendView.as_view(),
        name="platform_org_suspend",
    ),
    path(
        "organizations/<pid:org_id>/reactivate/",
        views.OrgReactivateView.as_view(),
        name="platform_org_reactivate",
    ),
    path("admins/", views.AdminsView.as_view(), name="platform_admins"),
    path("admins/revoke/", views.AdminRevokeView.as_view(), name="platform_admin_revoke"),
    path("system-keys/", views.SystemKeysView.as_view(), name="platform_system_keys"),
    path(
        "system-keys/<pid:key_id>/revoke/",
        views.SystemKeyRevokeView.as_view(),
        name="platform_system_key_revoke",
    ),
]

org_urlpatterns: list[URLPattern | URLResolver] = [
    path("kyc/", views.KycView.as_view(), name="org_kyc"),
    path(
        "kyc/documents/<pid:doc_id>/",
        views.KycDocumentDownloadView.as_view(),
        name="org_kyc_document",
    ),
]
