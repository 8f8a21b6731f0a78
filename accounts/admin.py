from django.contrib import admin
from django.http import HttpRequest
from django_otp.plugins.otp_totp.admin import TOTPDeviceAdmin
from django_otp.plugins.otp_totp.models import TOTPDevice

from accounts.models import PasskeyDevice, RecoveryCodeDevice, User


@admin.register(User)
class UserAdmin(admin.ModelAdmin[User]):
    """Names and emails are editable; roles and account status are not.

    Platform roles change through `set_platform_role` and the platform console, which audit
    the change and keep the last platform owner; accounts are created by signing in and
    never deleted from here (ADR 0015).
    """

    list_display = ("email", "full_name", "platform_role", "is_active", "date_joined")
    list_filter = ("platform_role", "is_active", "is_staff")
    search_fields = ("email", "full_name")
    ordering = ("email",)
    fields = (
        "email",
        "full_name",
        "platform_role",
        "is_active",
        "is_staff",
        "is_superuser",
        "groups",
        "user_permissions",
        "last_login",
        "date_joined",
    )
    readonly_fields = (
        "platform_role",
        "is_active",
        "is_staff",
        "is_superuser",
        "groups",
        "user_permissions",
        "last_login",
        "date_joined",
    )

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_delete_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(PasskeyDevice)
class PasskeyDeviceAdmin(admin.ModelAdmin[PasskeyDevice]):
    """Read-only list; deleting a row removes a lost passkey for a locked-out user."""

    list_display = ("name", "user", "created_at", "last_used_at", "backed_up")
    search_fields = ("user__email", "name")
    fields = ("user", "name", "public_id", "created_at", "last_used_at", "sign_count")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


@admin.register(RecoveryCodeDevice)
class RecoveryCodeDeviceAdmin(admin.ModelAdmin[RecoveryCodeDevice]):
    """Shows who has recovery codes; the digests themselves are never displayed."""

    list_display = ("user", "created_at", "last_used_at", "throttling_failure_count")
    search_fields = ("user__email",)
    fields = ("user", "name", "created_at", "last_used_at", "throttling_failure_count")
    readonly_fields = fields

    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False


# django-otp registers an admin that adds and edits authenticator apps, key included: a
# device added there for someone else would be a second factor of theirs that no audit
# event, security notice or recovery-code rule ever saw (ADR 0075). Apps are set up and
# removed on the security page; here they are listed, shown without their key, and
# deleted only to free a locked-out user, as passkeys are (ADR 0015).
admin.site.unregister(TOTPDevice)


@admin.register(TOTPDevice)
class ReadOnlyTOTPDeviceAdmin(TOTPDeviceAdmin):
    def has_add_permission(self, request: HttpRequest) -> bool:
        return False

    def has_change_permission(self, request: HttpRequest, obj: object = None) -> bool:
        return False
