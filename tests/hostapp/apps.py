from django.apps import AppConfig


class HostAppConfig(AppConfig):
    """A host app as an operator writes one: it imports only `apikeys.public`."""

    name = "tests.hostapp"
    label = "hostapp"
