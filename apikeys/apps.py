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
