"""The API's URLs, mounted under /api/v1/ (see config/urls.py).

Ids in paths are opaque public ids (`key_…`, `mem_…`): the `pid` converter refuses
anything else before a view runs. The last pattern answers every unknown path with the
error shape (404 `not_found`), in DEBUG too. The converters live in config/converters.py
(ADR 0074).
"""

from django.conf import settings
from django.urls import URLPattern, URLResolver, include, path, re_path

import config.converters  # noqa: F401  (registers <pid>)
from apikeys import api, leaks, usage_api, verify
from orgs import api as orgs_api

urlpatterns: list[URLPattern | URLResolver] = [
    path("ping", api.PingApi.as_view(), name="api-ping"),
    path("me", api.MeApi.as_view(), name="api-me"),
    path("scopes", api.ScopeCatalogueApi.as_view(), name="api-scopes"),
    path("keys/verify", verify.VerifyKeyApi.as_view(), name="api-keys-verify"),
    path("organization", orgs_api.OrganizationApi.as_view(), name="api-organization"),
    path("members", orgs_api.MemberListApi.as_view(), name="api-members"),
    path("members/<pid:member_id>", orgs_api.MemberDetailApi.as_view(), name="api-member"),
    path("invitations", orgs_api.InvitationListApi.as_view(), name="api-invitations"),
    path("sign-in-links", orgs_api.SignInLinkApi.as_view(), name="api-sign-in-links"),
    path(
        "invitations/<pid:invitation_id>",
        orgs_api.InvitationDetailApi.as_view(),
        name="api-invitation",
    ),
    path(
        "invitations/<pid:invitation_id>/resend",
        orgs_api.InvitationResendApi.as_view(),
        name="api-invitation-resend",
    ),
    path(
        "invitations/<pid:invitation_id>/cancel",
        orgs_api.InvitationCancelApi.as_view(),
        name="api-invitation-cancel",
    ),
    path("api-keys", api.ApiKeyListApi.as_view(), name="api-keys"),
    path("api-keys/<pid:key_id>", api.ApiKeyDetailApi.as_view(), name="api-key"),
    path("api-keys/<pid:key_id>/rotate", api.ApiKeyRotateApi.as_view(), name="api-key-rotate"),
    path("api-keys/<pid:key_id>/revoke", api.ApiKeyRevokeApi.as_view(), name="api-key-revoke"),
    path("audit-events", orgs_api.AuditEventListApi.as_view(), name="api-audit-events"),
    path("usage", usage_api.UsageApi.as_view(), name="api-usage"),
    path("leaked-keys", leaks.LeakReportApi.as_view(), name="api-leaked-keys"),
    path(
        "secret-scanning/github",
        leaks.GithubSecretScanningApi.as_view(),
        name="api-secret-scanning-github",
    ),
    path("", include("platform_admin.api_urls")),
    path("", include("webhooks.api_urls")),
]
if settings.LATCHKEY_EXTRA_URLCONF:
    # The operator's own endpoints (apikeys.public), under /api/v1/ beside Latchkey's.
    urlpatterns.append(path("", include(settings.LATCHKEY_EXTRA_URLCONF)))
urlpatterns += [
    # Keep last: everything else under /api/v1/ is a JSON 404.
    re_path(r"^.*$", api.NotFoundApi.as_view(), name="api-not-found"),
]
