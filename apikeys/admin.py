from django.contrib import admin

from apikeys.models import ApiKey


@admin.register(ApiKey)
class ApiKeyAdmin(admin.ModelAdmin[ApiKey]):
    """Read-only: keys are issued, rotated and revoked through the services only."""

    list_display = ("public_id", "name", "org", "environment", "display", "created_at")
    list_filter = ("environment",)
    search_fields = ("public_id", "name", "display", "org__slug")
    readonly_fields = [f.name for f in ApiKey._meta.fields]

    def has_add_permission(self, request: object) -> bool:
        return False

    def has_change_permission(self, request: object, obj: object = None) -> bool:
        return False

    def has_delete_permission(self, request: object, obj: object = None) -> bool:
        return False
