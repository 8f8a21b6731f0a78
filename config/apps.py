from django.contrib.admin.apps import AdminConfig


class LatchkeyAdminConfig(AdminConfig):
    """django.contrib.admin with Latchkey's site as `admin.site` (see config.admin)."""

    default_site = "config.admin.LatchkeyAdminSite"
