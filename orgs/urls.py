"""Org URLs. `org_urlpatterns` are mounted under /o/<org_slug>/ (see config/urls.py);
every view there is built on orgs.tenancy.OrgMixin."""

from django.urls import URLPattern, URLResolver, path

import config.converters  # noqa: F401  (registers <pid>, <token>)
from orgs import views

urlpatterns: list[URLPattern | URLResolver] = [
    path("orgs/new/", views.OrgCreateView.as_view(), name="org_create"),
    path("onboarding/", views.OrgCreateView.as_view(), name="onboarding"),
    path("orgs/switch/", views.OrgSwitchView.as_view(), name="org_switch"),
    path(
        "invitations/id/<pid:invitation_id>/",
        views.InvitationForInviteeView.as_view(),
        name="invitation_for_invitee",
    ),
    path("invitations/<token:token>/", views.InvitationView.as_view(), name="invitation"),
]

org_urlpatterns: list[URLPattern | URLResolver] = [
    path("", views.OrgOverviewView.as_view(), name="org_overview"),
    path("members/", views.MembersView.as_view(), name="org_members"),
    path("members/invite/", views.MemberInviteView.as_view(), name="org_member_invite"),
    path("members/leave/", views.MemberLeaveView.as_view(), name="org_member_leave"),
    path(
        "members/<pid:member_id>/role/",
        views.MemberRoleView.as_view(),
        name="org_member_role",
    ),
    path(
        "members/<pid:member_id>/remove/",
        views.MemberRemoveView.as_view(),
        name="org_member_remove",
    ),
    path(
        "invitations/<pid:invitation_id>/resend/",
        views.InvitationResendView.as_view(),
        name="org_invitation_resend",
    ),
    path(
        "invitations/<pid:invitation_id>/cancel/",
        views.InvitationCancelView.as_view(),
        name="org_invitation_cancel",
    ),
    path("settings/", views.SettingsView.as_view(), name="org_settings"),
    path(
        "settings/transfer/",
        views.OwnershipTransferView.as_view(),
        name="org_ownership_transfer",
    ),
    path("settings/delete/", views.OrgDeleteView.as_view(), name="org_delete"),
    path("audit/", views.AuditLogView.as_view(), name="org_audit"),
    path("audit/export.csv", views.AuditExportView.as_view(), name="org_audit_export"),
]
