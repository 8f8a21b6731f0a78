from django.contrib import admin

from accounts.models import User


@admin.register(User)
class UserAdmin(admin.ModelAdmin[User]):
    list_display = ("email", "full_name", "platform_role", "is_active", "date_joined")
    list_filter = ("platform_role", "is_active", "is_staff")
    search_fields = ("email", "full_name")
    ordering = ("email",)
    exclude = ("password",)
    readonly_fields = ("last_login", "date_joined")
