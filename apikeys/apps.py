from typing import Any

from django.apps import AppConfig
from django.core import checks


class ApikeysConfig(AppConfig):
    name = "apikeys"
    verbose_name = "API keys"

    def ready(self) -> None:
        from apikeys import catalogue

        catalogue.reload()
        checks.register(check_catalogue)
        checks.register(check_api_views, checks.Tags.urls)


def check_catalogue(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """A malformed catalogue stops `runserver`, `migrate` and every command (docs/catalogue.md)."""
    from apikeys import catalogue

    error = catalogue.reload()
    if error is None:
        return []
    return [
        checks.Error(
            str(error),
            hint="Fix the file named by LATCHKEY_CATALOGUE (see docs/catalogue.md).",
            id="latchkey.E001",
        )
    ]


def check_api_views(app_configs: Any = None, **kwargs: Any) -> list[checks.CheckMessage]:
    """Every API view (Latchkey's and the host apps') declares a resource and actions the
    catalogue has, so a typo stops the start instead of answering 500 (latchkey.E002)."""
    from django.core.exceptions import ImproperlyConfigured
    from django.urls import URLPattern, URLResolver, get_resolver

    from apikeys import catalogue
    from apikeys.api_base import ApiView

    if catalogue.reload() is not None:
        return []  # latchkey.E001 says why
    errors: list[checks.CheckMessage] = []
    pending = list(get_resolver().url_patterns)
    while pending:
        entry = pending.pop()
        if isinstance(entry, URLResolver):
            pending.extend(entry.url_patterns)
            continue
        view_class = getattr(getattr(entry, "callback", None), "view_class", None)
        if not isinstance(entry, URLPattern) or not isinstance(view_class, type):
            continue
        if not issubclass(view_class, ApiView):
            continue
        try:
            view_class._check_declaration()
        except ImproperlyConfigured as exc:
            errors.append(checks.Error(str(exc), obj=view_class, id="latchkey.E002"))
    return errors
