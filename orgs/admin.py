"""Organisations, memberships and the audit log in Django's admin: read-only (ADR 0075).

Suspending an organisation, changing a role or removing a member goes through
`orgs.services` or the platform console, which record the audit event and invalidate the
cached API-key verifications at once; the admin would do neither.
"""

from django.contrib import admin

from config.admin import ServiceOwnedAdmin
from orgs.models import AuditEvent, Membership, Organization


class MembershipInline(ServiceOwnedAdmin, admin.TabularInline[Membership, Organization]):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)


@admin.register(Organization)
class OrganizationAdmin(ServiceOwnedAdmin, admin.ModelAdmin[Organization]):
    list_display = ("name", "slug", "public_id", "plan", "kyc_status", "status", "created_at")
    list_filter = ("plan", "kyc_status", "status")
    search_fields = ("name", "slug", "public_id")
    readonly_fields = ("public_id", "created_at", "updated_at")
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(ServiceOwnedAdmin, admin.ModelAdmin[Membership]):
    list_display = ("public_id", "org", "user", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("org__slug", "user__email")
    raw_id_fields = ("user", "org")


@admin.register(AuditEvent)
class AuditEventAdmin(ServiceOwnedAdmin, admin.ModelAdmin[AuditEvent]):
    """The audit log is append-only, in the admin too."""

    list_display = ("created_at", "action", "actor_label", "org", "target_label", "ip")
    list_filter = ("action", "actor_type")
    search_fields = ("action", "actor_label", "target_id", "request_id")
    date_hierarchy = "created_at"
