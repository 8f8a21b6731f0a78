from typing import Any

from django.contrib import admin
from django.http import HttpRequest

from orgs.models import AuditEvent, Membership, Organization


class MembershipInline(admin.TabularInline[Membership, Organization]):
    model = Membership
    extra = 0
    raw_id_fields = ("user",)


@admin.register(Organization)
class OrganizationAdmin(admin.ModelAdmin[Organization]):
    list_display = ("name", "slug", "public_id", "plan", "kyc_status", "status", "created_at")
    list_filter = ("plan", "kyc_status", "status")
    search_fields = ("name", "slug", "public_id")
    readonly_fields = ("public_id", "created_at", "updated_at")
    inlines = [MembershipInline]


@admin.register(Membership)
class MembershipAdmin(admin.ModelAdmin[Membership]):
    list_display = ("public_id", "org", "user", "role", "created_at")
    list_filter = ("role",)
    search_fields = ("org__slug", "user__email")
    raw_id_fields = ("user", "org")


@admin.register(AuditEvent)
class AuditEventAdmin(admin.ModelAdmin[AuditEvent]):
    """Read-only: the audit log is append-only, in the admin too."""

    list_display = ("created_at", "action", "actor_label", "org", "target_label", "ip")
    list_filter = ("action", "actor_type")
    search_fields = ("action", "actor_label", "target_id", "request_id")
    date_hierarchy = "created_at"

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: Any = None) -> bool:
        return False
